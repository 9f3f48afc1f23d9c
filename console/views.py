"""Pages of the console shell: dashboard and audit log."""

from django.core.paginator import Paginator
from django.shortcuts import render

from console import dashboard as dashboard_figures
from core.filters import AuditEntryFilter
from core.models import AuditEntry
from core.roles import role_required

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
