"""Pages of the pipeline: push events, the webhook intake, conversion jobs, backfill, images and
the operations they start.

Views are thin: they load the object, call one verb in pipeline/actions.py (or the operations and
catalogue) and render a page, a partial or a redirect; none of them talks to a registry except the
deletion of an image. Slow work (an Images refresh, backfill, Convert now) becomes an operation the
page polls. Reads need the viewer role; jobs, backfill and image deletion need operator. The
webhook intake is the one view without a login: the instance's secret authenticates it.
"""


from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from converter.reference import TAG, InvalidReference
from core.auth import client_ip
from core.htmx import stop_polling_when, success_redirect
from core.roles import Role, role_required
from pipeline import actions, catalogue, deliveries, operations, startup, twins
from pipeline.choices import JobStatus, OperationKind
from pipeline.filters import PushEventFilter
from pipeline.forms import ConvertNowForm
from pipeline.intake import MalformedPayload, parse_payload
from pipeline.models import ConversionJob, Operation, PushEvent, RegistryTag
from pipeline.naming import suffix
from registries.actions import check_webhook_secret, webhook_instance, webhook_url
from registries.models import Instance
from registries.validators import MANIFEST_DIGEST, REPOSITORY_PATH
from rules.models import Rule

PAGE_SIZE = 50


# --- Push events and the webhook intake ----------------------------------------------------------

EVENTS_PAGE_SIZE = 50


@role_required()
def event_list(request):
    events = PushEvent.objects.select_related("instance", "matched_rule", "job")
    filterset = PushEventFilter(request.GET or None, queryset=events)
    filtered = filterset.qs if filterset.is_bound else events
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "filterset": filterset,
        "page": Paginator(filtered, EVENTS_PAGE_SIZE).get_page(request.GET.get("page")),
        "filtering": any(value for key, value in request.GET.items() if key != "page"),
        "any_events": PushEvent.objects.exists(),
        "instance_count": Instance.objects.count(),
    }
    return render(request, "pipeline/event_list.html", context)


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _refuse(request, instance: Instance, status: int, message: str, reason: str = "") -> JsonResponse:
    """Answer a refused delivery, and count it in the instance's webhook health with a short reason."""
    deliveries.record_refused(instance, status, reason or message, client_ip(request))
    return _error(status, message)


@csrf_exempt
@require_POST
def webhook_intake(request, instance_id: str):
    """Registry push notifications for one instance (no login: authenticated by the webhook secret)."""
    instance = webhook_instance(instance_id)
    if instance is None:
        return _error(404, "Unknown instance. Check the webhook URL on the instance's page.")
    authorization = request.headers.get("Authorization", "")
    if not check_webhook_secret(instance, authorization):
        return _refuse(request, instance, 401, "Missing or wrong webhook secret in the Authorization header.",
                       "No Authorization header." if not authorization.strip() else
                       "Wrong webhook secret in the Authorization header.")
    limit = settings.APPARATE_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return _refuse(request, instance, 400, "Content-Length is not a number.")
    if declared > limit:
        return _refuse(request, instance, 413, f"The body is larger than {limit} bytes.")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _refuse(request, instance, 413, f"The body is larger than {limit} bytes.")
    try:
        parsed = parse_payload(body)
    except MalformedPayload as error:
        return _refuse(request, instance, 400, str(error))
    events = actions.record_pushes(instance, parsed.pushes)
    deliveries.record_accepted(instance, deliveries.accepted_result(parsed, events))
    return JsonResponse(
        {
            "received": len(events),
            "ignored": parsed.ignored,
            "events": [{"id": e.pk, "outcome": e.outcome, "reason": e.reason} for e in events],
        },
        status=202,
    )


@require_POST
@role_required(write_role=Role.OPERATOR)
def webhook_test(request, pk: int):
    """Send test event: a real signed delivery to the console's own webhook URL; the health panel."""
    instance = get_object_or_404(Instance, pk=pk)
    outcome = deliveries.send_test_delivery(instance, webhook_url(instance, request), request.user)
    context = {"instance": instance, "test_outcome": outcome}
    if request.htmx:
        return render(request, "pipeline/_webhook_health.html", context)
    (messages.success if outcome.ok else messages.error)(request, outcome.summary)
    return success_redirect(request, instance.get_absolute_url())


# --- Images --------------------------------------------------------------------------------------


@role_required()
def image_list(request):
    """Per instance: tags beside their accelerated twins, read from rows that a background refresh
    keeps up to date; a view whose rows are older than APPARATE_IMAGES_REFRESH_AGE starts one."""
    instances = list(Instance.objects.all())
    instance = next((i for i in instances if str(i.pk) == request.GET.get("instance")), instances[0] if instances
                    else None)
    namespace = request.GET.get("namespace", "").strip()[:255]
    repository = request.GET.get("repository", "").strip()[:255]
    found = operations.images_page(instance, namespace, repository, request.GET.get("page", 1),
                                   request.user) if instance else None
    context = {"instances": instances, "instance": instance, "namespace": namespace, "repository": repository,
               "suffix": suffix(), "catalogue": found}
    return render(request, "pipeline/image_list.html", context)


@require_POST
@role_required(write_role=Role.VIEWER)
def image_refresh(request, pk: int):
    """"Refresh now": read the instance's registry again in the background (it changes nothing there)."""
    operation = operations.request_refresh(get_object_or_404(Instance, pk=pk), request.user)
    if request.htmx:
        return render(request, "pipeline/_operation.html", {"operation": operation, "reload": True})
    return success_redirect(request, f"{reverse('pipeline:images')}?instance={pk}")


@role_required(read_role=Role.OPERATOR)
def image_delete(request, pk: int):
    """Delete one image by digest after a confirmation; the other image of the pair stays."""
    instance = get_object_or_404(Instance, pk=pk)
    source = request.POST if request.method == "POST" else request.GET
    path, digest, tag = source.get("path", ""), source.get("digest", ""), source.get("tag", "")[:128]
    if not REPOSITORY_PATH.fullmatch(path) or not MANIFEST_DIGEST.fullmatch(digest):
        return HttpResponseBadRequest("Give the repository path (namespace/repository) and a sha256 digest.")
    back = f"{reverse('pipeline:images')}?instance={instance.pk}&namespace={path.partition('/')[0]}"
    if request.method == "POST":
        try:
            catalogue.delete_image(instance, path, digest, request.user, "ui")
        except catalogue.DeleteRefused as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"Deleted {path}@{digest} ({tag or 'untagged'}).")
        return success_redirect(request, back)
    others = [other for other in catalogue.tags_of_digest(instance, path, digest) if other != tag]
    return render(request, "pipeline/image_confirm_delete.html",
                  {"instance": instance, "path": path, "digest": digest, "tag": tag, "back": back, "others": others})


def _image_params(request) -> tuple[str, str] | None:
    """The `path` and `tag` a request names, when both are well-formed."""
    path, tag = request.GET.get("path", ""), request.GET.get("tag", "")
    if not REPOSITORY_PATH.fullmatch(path) or not TAG.fullmatch(tag):
        return None
    return path, tag


@role_required()
def image_why(request, pk: int):
    """Why a tag has no accelerated twin: its twin row, latest job, latest push, or the rules now."""
    instance = get_object_or_404(Instance, pk=pk)
    params = _image_params(request)
    if params is None:
        return HttpResponseBadRequest("Give the repository path (namespace/repository) and a tag.")
    return render(request, "pipeline/image_why.html", {"instance": instance, "why": catalogue.explain_missing_twin(
        instance, *params), "suffix": suffix()})


@role_required(read_role=Role.OPERATOR)
def image_reconvert(request, pk: int):
    """The confirmation before *Convert now* of a tag whose twin is present: says whether it would
    convert again (and what changed) or change nothing. The form posts to Convert now."""
    instance = get_object_or_404(Instance, pk=pk)
    params = _image_params(request)
    if params is None:
        return HttpResponseBadRequest("Give the repository path (namespace/repository) and a tag.")
    path, tag = params
    twin = twins.row_of_tag(instance, *catalogue.split_path(path), tag)
    if twin is None or not twin.is_present:
        messages.info(request, f"{path}:{tag} has no accelerated twin: use Convert.")
        return redirect(f"{reverse('pipeline:images')}?instance={instance.pk}")
    seen = RegistryTag.objects.filter(instance=instance, namespace=twin.namespace, repository=twin.repository,
                                      tag=tag).values_list("digest", flat=True).first() or ""
    return render(request, "pipeline/image_reconvert.html", {
        "instance": instance, "twin": twin, "plan": actions.reconversion(instance, twin, seen),
        "back": f"{reverse('pipeline:images')}?instance={instance.pk}&namespace={twin.namespace}"})


@require_POST
@role_required(write_role=Role.VIEWER)
def rule_preview(request):
    """The rule form's live preview: which known tags of the instance the namespace and patterns
    being typed would match (`rule` names the rule being edited, `instance` a new rule's instance).
    Changes nothing and reads no registry."""
    rule_id, instance_id = request.POST.get("rule", ""), request.POST.get("instance", "")
    rule = Rule.objects.select_related("instance").filter(pk=rule_id).first() if rule_id.isdigit() else None
    if rule is not None:
        instance = rule.instance
    else:
        instance = Instance.objects.filter(pk=instance_id).first() if instance_id.isdigit() else None
    namespace = request.POST.get("namespace", "").strip()
    preview = None if instance is None else catalogue.preview_rule(
        instance, namespace, request.POST.get("repository_pattern", ""), request.POST.get("tag_pattern", ""))
    return render(request, "pipeline/_rule_preview.html#result",
                  {"instance": instance, "namespace": namespace, "preview": preview})


# --- Operations ------------------------------------------------------------------------------------


@role_required()
def operation_detail(request, pk: int):
    """An operation as it goes: htmx polls the partial, which answers 286 once it is done (and sends
    the browser on: to the job Convert now found, or a fresh Images page after a refresh)."""
    operation = get_object_or_404(Operation.objects.select_related("instance", "rule", "job"), pk=pk)
    if not request.htmx:
        return render(request, "pipeline/operation_detail.html", {"operation": operation})
    reload = bool(request.GET.get("reload"))  # the Images page: show the refreshed rows when done
    response = stop_polling_when(render(request, "pipeline/_operation.html",
                                        {"operation": operation, "reload": reload}), operation.is_done)
    if operation.is_done and operation.kind == OperationKind.CONVERT_NOW and operation.job_id:
        response["HX-Redirect"] = operation.job.get_absolute_url()
    elif operation.is_done and reload:
        response["HX-Refresh"] = "true"
    return response


# --- Conversion jobs and backfill ---------------------------------------------------------------

JOB_SORTS = {"created_at", "-created_at", "finished_at", "-finished_at", "status", "-status", "repository",
             "-repository"}


def _job_filters(request) -> tuple[object, dict]:
    jobs = ConversionJob.objects.select_related("instance", "rule")
    status = request.GET.get("status", "")
    if status in JobStatus.values:
        jobs = jobs.filter(status=status)
    else:
        status = ""
    instance = None
    if request.GET.get("instance", "").isdigit():
        instance = Instance.objects.filter(pk=request.GET["instance"]).first()
        if instance is not None:
            jobs = jobs.filter(instance=instance)
    search = request.GET.get("q", "").strip()[:200]
    if search:
        jobs = jobs.filter(Q(namespace__icontains=search) | Q(repository__icontains=search)
                           | Q(source_tag__icontains=search) | Q(source_digest__icontains=search))
    sort = request.GET.get("sort", "")
    jobs = jobs.order_by(sort if sort in JOB_SORTS else "-created_at", "-id")
    return jobs, {"status": status, "current_instance": instance, "search": search}


@role_required()
def job_list(request):
    """All conversion jobs, filterable by status, instance and repository; newest first. While a
    job on the page is live, htmx refreshes the rows every 2 seconds."""
    jobs, filters = _job_filters(request)
    page = Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
    live = any(not job.is_terminal for job in page)
    if request.htmx and request.GET.get("partial") == "rows":
        # The rows refresh themselves while a job on the page is queued or running; 286 stops that.
        return stop_polling_when(render(request, "pipeline/job_list.html#rows", {"page": page, "live": live}), not live)
    counts = dict(ConversionJob.objects.values_list("status").annotate(n=Count("id")))
    context = {
        "page": page,
        "live": live,
        "instances": Instance.objects.all(),
        "statuses": [(value, label, counts.get(value, 0)) for value, label in JobStatus.choices],
        "convert_form": ConvertNowForm(),
        "suffix": suffix(),
        "any_jobs": bool(counts),
        **filters,
    }
    return render(request, "pipeline/job_list.html", context)


@role_required()
def job_detail(request, pk: int):
    """A job with its progress bar, layers, log, push events and twins; htmx polls the progress
    partial until it ends. The partial answers 286 once the job is terminal, which tells htmx to stop.
    """
    job = get_object_or_404(ConversionJob.objects.select_related("instance", "rule", "event"), pk=pk)
    if request.htmx and request.GET.get("partial") == "progress":
        # The page's Cancel/Retry buttons come along (out of band), so they follow the job's state.
        return stop_polling_when(render(request, "pipeline/job_detail.html#progress", {
            "job": job, "result_twin": startup.twin_of_job(job), "retry_offered": actions.retry_offered(job)}),
            job.is_terminal)
    return render(request, "pipeline/job_detail.html", {
        "job": job, "retry_offered": actions.retry_offered(job),
        "events": job.push_events.order_by("-received_at", "-id")[:EVENTS_PAGE_SIZE],
        "twin_rows": job.twins.order_by("twin_tag"), "result_twin": startup.twin_of_job(job),
    })


def _job_action(request, pk: int, verb) -> object:
    job = get_object_or_404(ConversionJob, pk=pk)
    try:
        job = verb(job)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"Job #{job.pk} is {job.get_status_display().lower()}.")
    return success_redirect(request, reverse("pipeline:job-detail", args=[job.pk]))


@require_POST
@role_required()
def job_retry(request, pk: int):
    return _job_action(request, pk, actions.retry_job)


@require_POST
@role_required()
def job_cancel(request, pk: int):
    return _job_action(request, pk, actions.cancel_job)


@require_POST
@role_required()
def job_convert_now(request):
    """Convert any tag of an instance now (with the matching rule's options, or the defaults). The
    answer comes at once: the digest is read by a worker, and the page follows the operation."""
    form = ConvertNowForm(request.POST)
    operation = None
    if form.is_valid():
        try:
            operation = operations.request_convert_now(form.cleaned_data["instance"], form.cleaned_data["image"],
                                                       requested_by=request.user)
        except (ValidationError, InvalidReference) as error:
            form.add_error("image", error.messages if isinstance(error, ValidationError) else str(error))
        else:
            if not request.htmx:
                return success_redirect(request, operation.get_absolute_url())
            form = ConvertNowForm(initial={"instance": form.cleaned_data["instance"]})
    if request.htmx:
        return render(request, "pipeline/job_list.html#convert-form", {"convert_form": form, "operation": operation})
    jobs, filters = _job_filters(request)
    return render(request, "pipeline/job_list.html", {
        "page": Paginator(jobs, PAGE_SIZE).get_page(1), "instances": Instance.objects.all(),
        "statuses": [(value, label, 0) for value, label in JobStatus.choices], "convert_form": form,
        "any_jobs": jobs.exists(), "suffix": suffix(), **filters,
    })


@role_required(read_role=Role.OPERATOR)
def rule_backfill(request, pk: int):
    """"Convert existing images": POST `preview=1` starts a preview, POST alone the request; both
    are operations the partial polls. GET shows the partial's starting point."""
    rule = get_object_or_404(Rule.objects.select_related("instance"), pk=pk)
    error = operation = None
    if request.method == "POST":
        try:
            operation = operations.request_backfill(rule, request.user, preview=bool(request.POST.get("preview")))
        except ValidationError as exc:
            error = " ".join(exc.messages)
        if not request.htmx:
            if error:
                messages.error(request, error)
            return success_redirect(request, operation.get_absolute_url() if operation else rule.get_absolute_url())
    template = "pipeline/_backfill.html#result" if request.htmx else "pipeline/_backfill.html"
    return render(request, template, {"rule": rule, "operation": operation, "backfill_error": error})
