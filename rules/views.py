"""Pages of the rules app: list, create/edit, detail with the validation box, and htmx actions.

Views are thin: they load the object, call one verb in rules/actions.py and render a page or a
partial. Reads need the viewer role; changes need the operator role (checked again server-side,
whatever the page shows).
"""

from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Max, Min, Q
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from converter.reference import InvalidReference
from core.htmx import next_url, success_redirect
from core.roles import Role, role_required
from registries.models import Instance
from rules import actions
from rules.forms import PATTERN_FIELDS, AddressForm, RuleForm
from rules.models import Rule
from rules.validators import PatternError, compile_uncached

PAGE_SIZE = 50
# Pushes a rule matched and the last one, from the push events that name it (aggregated in the query).
PUSH_FIGURES = {"pushes_matched": Count("push_events"), "last_matched": Max("push_events__received_at")}


@role_required()
def rule_list(request):
    rules = Rule.objects.select_related("instance").annotate(**PUSH_FIGURES).order_by("instance__name", "position",
                                                                                     "id")
    instance = None
    if request.GET.get("instance", "").isdigit():
        instance = Instance.objects.filter(pk=request.GET["instance"]).first()
        if instance is not None:
            rules = rules.filter(instance=instance)
    search = request.GET.get("q", "").strip()
    if search:
        rules = rules.filter(
            Q(name__icontains=search) | Q(description__icontains=search) | Q(namespace__icontains=search)
            | Q(repository_pattern__icontains=search) | Q(tag_pattern__icontains=search)
        )
    filters = {"instance": instance.pk if instance else None, "q": search}
    query = urlencode({key: value for key, value in filters.items() if value})
    page = Paginator(rules, PAGE_SIZE).get_page(request.GET.get("page"))
    # ↑ is off on an instance's first rule and ↓ on its last (whatever the filter shows).
    ends = {instance_id: (first, last) for instance_id, first, last in Rule.objects.values("instance_id")
            .annotate(first=Min("position"), last=Max("position")).values_list("instance_id", "first", "last")}
    for rule in page:
        first, last = ends.get(rule.instance_id, (None, None))
        rule.is_first, rule.is_last = rule.position == first, rule.position == last
    context = {
        "page": page,
        "instances": Instance.objects.all(),
        "current_instance": instance,
        "search": search,
        "query": query,
        "accelerated_instances": Instance.objects.filter(acceleration_enabled=True).exists(),
    }
    return render(request, "rules/rule_list.html", context)


@role_required()
def rule_detail(request, pk: int):
    rule = get_object_or_404(Rule.objects.select_related("instance").annotate(**PUSH_FIGURES), pk=pk)
    return render(request, "rules/rule_detail.html", {"rule": rule, "address_form": AddressForm()})


def _edit(request, rule: Rule, template_context: dict):
    form = RuleForm(request.POST or None, instance=rule, initial=template_context.pop("initial", None))
    template_context.setdefault("address_form", AddressForm())
    if request.method == "POST" and form.is_valid():
        try:
            actions.save_rule(form.instance)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, f"Rule '{form.instance.name}' saved.")
            return success_redirect(request, form.instance.get_absolute_url())
    template = "rules/rule_form.html#form" if request.htmx else "rules/rule_form.html"
    return render(request, template, {"form": form, "rule": rule, **template_context})


@role_required(read_role=Role.OPERATOR)
def rule_create(request):
    initial = {}
    if request.GET.get("instance", "").isdigit():
        initial["instance"] = request.GET["instance"]
    has_accelerated = Instance.objects.filter(acceleration_enabled=True).exists()
    return _edit(request, Rule(), {"initial": initial, "has_accelerated": has_accelerated})


@role_required(read_role=Role.OPERATOR)
def rule_edit(request, pk: int):
    rule = get_object_or_404(Rule.objects.select_related("instance"), pk=pk)
    return _edit(request, rule, {"has_accelerated": True})


@role_required(read_role=Role.OPERATOR)
def rule_delete(request, pk: int):
    rule = get_object_or_404(Rule.objects.select_related("instance"), pk=pk)
    if request.method == "POST":
        name = rule.name
        actions.delete_rule(rule)
        messages.success(request, f"Rule '{name}' deleted.")
        return success_redirect(request, reverse("rules:list"))
    return render(request, "rules/rule_confirm_delete.html", {"rule": rule})


@require_POST
@role_required()
def rule_toggle(request, pk: int):
    rule = get_object_or_404(Rule.objects.select_related("instance"), pk=pk)
    enabled = request.POST.get("enabled")
    if enabled not in ("true", "false"):
        return HttpResponseBadRequest("Send enabled=true or enabled=false.")
    actions.set_rule_enabled(rule, enabled == "true")
    if request.htmx:
        return render(request, "rules/rule_list.html#toggle", {"rule": rule})
    return redirect(next_url(request, reverse("rules:list")))


@require_POST
@role_required()
def rule_move(request, pk: int, direction: str):
    rule = get_object_or_404(Rule, pk=pk)
    try:
        actions.move_rule(rule, direction)
    except ValidationError as error:
        return HttpResponseBadRequest(" ".join(error.messages))
    url = f"{reverse('rules:list')}?instance={rule.instance_id}"
    return success_redirect(request, url)


def _validation(rule: Rule, form: AddressForm) -> dict:
    """Run the validation box for `rule` (saved or a draft): the address's verdict, or why there is none."""
    reference = evaluation = None
    if form.is_valid():
        try:
            reference, evaluation = actions.validate_address(rule, form.cleaned_data["address"])
        except (InvalidReference, PatternError) as error:
            form.add_error("address", str(error))
    return {"address_form": form, "reference": reference, "evaluation": evaluation}


@require_POST
@role_required(write_role=Role.VIEWER)
def rule_validate(request, pk: int):
    """The validation box: an address in, the per-criterion breakdown out. Changes nothing."""
    rule = get_object_or_404(Rule.objects.select_related("instance"), pk=pk)
    context = {"rule": rule, **_validation(rule, AddressForm(request.POST))}
    template = "rules/rule_detail.html#validation" if request.htmx else "rules/rule_detail.html"
    return render(request, template, context)


@require_POST
@role_required(read_role=Role.OPERATOR)
def rule_validate_draft(request):
    """The validation box of the rule form: the criteria as typed, before they are saved. Changes
    nothing. `?rule=<pk>` when editing (its instance is fixed); a new rule names its instance."""
    saved = request.GET.get("rule", "")
    rule = get_object_or_404(Rule.objects.select_related("instance"), pk=saved) if saved.isdigit() else Rule()
    if rule.pk is None and request.POST.get("instance", "").isdigit():
        rule.instance = Instance.objects.filter(pk=request.POST["instance"]).first()
    # As typed, unchecked: a pattern that does not compile is the verdict's business (validate_address).
    rule.name = request.POST.get("name", "").strip() or rule.name or "(new rule)"
    rule.namespace = request.POST.get("namespace", "").strip()
    rule.repository_pattern = request.POST.get("repository_pattern", "")
    rule.tag_pattern = request.POST.get("tag_pattern", "")
    rule.enabled = bool(request.POST.get("enabled"))
    form = AddressForm(request.POST)
    if rule.instance_id is None:
        form.is_valid()
        form.add_error("address", "Choose the rule's instance first: the address is checked against its host.")
        context = {"address_form": form}
    else:
        context = _validation(rule, form)
    if request.htmx:
        return render(request, "rules/rule_form.html#validation", {"rule": rule, **context})
    typed = RuleForm(instance=rule, initial={**request.POST.dict(), "instance": rule.instance_id})
    return render(request, "rules/rule_form.html", {"form": typed, "rule": rule, "has_accelerated": True, **context})


@require_POST
@role_required(write_role=Role.VIEWER)
def check_pattern(request):
    """Live check of a pattern input as the user types: answers the error or 'valid'.

    The pattern is compiled once and dropped (not cached): whatever anyone types costs no memory."""
    field = request.POST.get("field", "")
    if field not in PATTERN_FIELDS:
        return HttpResponseBadRequest("Unknown pattern field.")
    pattern = request.POST.get(field, "")
    error = None
    if pattern:
        try:
            compile_uncached(pattern)
        except PatternError as exc:
            error = str(exc)
    return render(request, "rules/rule_form.html#pattern-check", {"pattern": pattern, "error": error})


# --- Conversion jobs ---------------------------------------------------------------------------


