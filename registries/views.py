"""Pages of the registries app: instances (list, detail, forms, switches, webhook secret).

Views are thin: they load the object, call one verb in registries/actions.py and render a page,
a partial or a redirect. Reads need the viewer role. Instances, credentials, the acceleration
switch and the webhook secret are admin matters; "Test connection" changes nothing and is open
to operators too.
"""

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Max, Q
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.htmx import success_redirect
from core.roles import Role, role_required
from core.sorting import sort_queryset
from registries import actions
from registries.choices import ACCELERATION_COLOURS
from registries.forms import ConfirmForm, InstanceForm
from registries.models import Instance

PAGE_SIZE = 25
RECENT_EVENTS = 10
SORTS = {
    "name": "name", "url": "url", "acceleration": "acceleration_enabled", "rules": "rule_count",
    "last_push": "last_push", "created": "created_at",
}
admin_only = role_required(read_role=Role.ADMIN, write_role=Role.ADMIN)


def _instance_context(request, instance: Instance, **extra) -> dict:
    return {
        "instance": instance,
        "acceleration_colour": ACCELERATION_COLOURS[instance.acceleration_enabled],
        "webhook_url": actions.webhook_url(instance, request),
        "recent_events": instance.push_events.select_related("matched_rule")[:RECENT_EVENTS],
        "rule_count": instance.rules.count(),
        "rules_url": f"{reverse('rules:list')}?instance={instance.pk}",
        "suffix": settings.APPARATE_ACCELERATED_SUFFIX,
        **extra,
    }


@role_required()
def instance_list(request):
    instances = Instance.objects.annotate(
        rule_count=Count("rules", distinct=True), last_push=Max("push_events__received_at")
    )
    search = request.GET.get("q", "").strip()[:200]
    if search:
        instances = instances.filter(
            Q(name__icontains=search) | Q(url__icontains=search) | Q(description__icontains=search)
        )
    instances = sort_queryset(instances, request.GET.get("sort", "name"), SORTS, "name", tiebreak="name")
    context = {
        "page": Paginator(instances, PAGE_SIZE).get_page(request.GET.get("page")),
        "search": search,
        "total": Instance.objects.count(),
    }
    template = "registries/instance_list.html#results" if request.htmx else "registries/instance_list.html"
    return render(request, template, context)


@role_required()
def instance_detail(request, pk: int):
    instance = get_object_or_404(Instance, pk=pk)
    return render(request, "registries/instance_detail.html", _instance_context(request, instance))


def _form_page(request, form: InstanceForm, instance: Instance | None, status: int = 200):
    template = "registries/instance_form.html#form" if request.htmx else "registries/instance_form.html"
    return render(request, template, {"form": form, "instance": instance}, status=status)


def _reveal(request, instance: Instance, secret: str, note: str):
    """The instance page with the webhook secret shown, once (it is never shown again)."""
    context = _instance_context(request, instance, revealed_secret=secret, reveal_note=note)
    if request.htmx:
        response = render(request, "registries/instance_detail.html#page", context)
        response["HX-Retarget"] = "#content"
        response["HX-Reswap"] = "innerHTML"
        response["HX-Push-Url"] = instance.get_absolute_url()
        return response
    return render(request, "registries/instance_detail.html", context)


@admin_only
def instance_create(request):
    form = InstanceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        instance = form.save()
        return _reveal(request, instance, instance.webhook_secret,
                       f"Instance '{instance.name}' registered. Copy the webhook secret now: it is shown only once.")
    return _form_page(request, form, None)


@admin_only
def instance_edit(request, pk: int):
    instance = get_object_or_404(Instance, pk=pk)
    form = InstanceForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Instance '{instance.name}' saved.")
        return success_redirect(request, instance.get_absolute_url())
    return _form_page(request, form, instance)


@admin_only
def instance_delete(request, pk: int):
    instance = get_object_or_404(Instance, pk=pk)
    if request.method == "POST":
        name = instance.name
        counts = actions.delete_instance(instance)
        messages.success(
            request, f"Instance '{name}' deleted with its {counts['rules']} rule(s) and {counts['events']} push "
            "event(s). Nothing was deleted in the registry.",
        )
        return success_redirect(request, reverse("registries:list"))
    context = {"instance": instance, "rule_count": instance.rules.count(),
               "event_count": instance.push_events.count()}
    return render(request, "registries/instance_confirm_delete.html", context)


@require_POST
@role_required(write_role=Role.OPERATOR)
def test_connection(request, pk: int):
    instance = get_object_or_404(Instance, pk=pk)
    result = actions.test_connection(instance)
    if request.htmx:
        return render(request, "registries/instance_detail.html#connection-result", {"result": result})
    return render(request, "registries/instance_detail.html", _instance_context(request, instance, result=result))


@admin_only
def acceleration(request, pk: int):
    """GET: the confirmation. POST enabled=true&confirm=true turns acceleration on; enabled=false, off."""
    instance = get_object_or_404(Instance, pk=pk)
    enable = (request.POST if request.method == "POST" else request.GET).get("enabled", "true") == "true"
    form = ConfirmForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if not enable:
            actions.disable_acceleration(instance, request.user)
            messages.success(request, f"Acceleration turned off for '{instance.name}'. Nothing was deleted.")
            return success_redirect(request, instance.get_absolute_url())
        if form.is_valid():
            actions.enable_acceleration(instance, request.user, confirm=True)
            messages.success(request, f"Acceleration turned on for '{instance.name}'.")
            return success_redirect(request, instance.get_absolute_url())
        status = 400
    context = {"instance": instance, "enable": enable, "form": form, "suffix": settings.APPARATE_ACCELERATED_SUFFIX}
    template = "registries/acceleration_confirm.html#panel" if request.htmx else "registries/acceleration_confirm.html"
    return render(request, template, context, status=status)


@admin_only
def rotate_secret(request, pk: int):
    """GET: the confirmation. POST confirm=true: a new secret, shown once; the old one stops working."""
    instance = get_object_or_404(Instance, pk=pk)
    form = ConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        secret = actions.rotate_webhook_secret(instance)
        return _reveal(request, instance, secret, "Webhook secret rotated. Update the registry's webhook "
                       "configuration with the new secret now: it is shown only once, and the old one no longer works.")
    status = 400 if request.method == "POST" else 200
    return render(request, "registries/rotate_secret_confirm.html", {"instance": instance, "form": form}, status=status)


# --- Webhook intake ------------------------------------------------------------------------------


# --- Images ------------------------------------------------------------------------------------


