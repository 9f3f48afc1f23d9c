"""Pages of the console shell: dashboard, audit log, the user's API access and the help pages."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from rest_framework.authtoken.models import Token

from console import dashboard as dashboard_figures
from console import help
from core.auth import regenerate_token, token_expired, token_expires_at
from core.filters import AuditEntryFilter
from core.models import AuditEntry
from core.roles import Role, role_required

AUDIT_PAGE_SIZE = 50


@role_required()
def dashboard(request):
    return render(request, "console/dashboard.html", {"figures": dashboard_figures.gather(),
                                                      "charts": dashboard_figures.charts()})


@role_required()
def audit_log(request):
    data = request.GET.copy()
    data.setdefault("sort", "-timestamp")
    entries = AuditEntryFilter(data, queryset=AuditEntry.objects.select_related("actor"))
    page = Paginator(entries.qs, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    known = AuditEntry.objects.order_by()
    context = {
        "filter": entries,
        "page": page,
        "filtered": any(value for key, value in request.GET.items() if key not in {"page", "sort"}),
        "actors": known.values_list("actor_name", flat=True).distinct().order_by("actor_name"),
        "object_types": sorted(
            f"{app_label}.{model}" for app_label, model in known.values_list("app_label", "model").distinct()
        ),
    }
    return render(request, "console/audit.html", context)


@role_required(write_role=Role.VIEWER)
def api_access(request):
    """The user's own API token: whether one exists and until when; POST (confirmed) makes a new
    one, shown once on this answer, and the old one stops working. Changing one's own token needs
    no more than being logged in with some role."""
    token = Token.objects.filter(user=request.user).first()
    revealed = None
    if request.method == "POST":
        if request.POST.get("confirm") != "true":
            messages.error(request, "Tick the box to confirm: the current token stops working at once.")
            return redirect("api-access")
        token = revealed = regenerate_token(request.user)
    context = {"token": token, "revealed": revealed, "expires_at": token_expires_at(token) if token else None,
               "expired": token_expired(token) if token else False}
    return render(request, "console/api_access.html", context)


@role_required()
def help_page(request, slug: str = ""):
    """A README section inside the console; /help/ opens the first one."""
    pages = help.sections()
    if not pages:
        raise Http404("This installation has no README to show.")
    current = help.section(slug) if slug else pages[0]
    if current is None:
        raise Http404(f"No help section named '{slug}'.")
    return render(request, "console/help.html", {"sections": pages, "section": current})
