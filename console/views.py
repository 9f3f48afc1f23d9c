"""Pages of the console shell: dashboard and audit log."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render

from console.models import AuditEntry
from console.roles import role_required


@login_required
def dashboard(request):
    return render(request, "console/dashboard.html")


@role_required()
def audit_log(request):
    page = Paginator(AuditEntry.objects.select_related("actor"), 50).get_page(request.GET.get("page"))
    return render(request, "console/audit.html", {"page": page})
