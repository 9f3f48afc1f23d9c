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
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from converter.reference import InvalidReference
from core.htmx import stop_polling_when, success_redirect
from core.roles import Role, role_required
from pipeline import actions, catalogue, operations
from pipeline.choices import JobStatus, OperationKind
from pipeline.filters import PushEventFilter
from pipeline.forms import ConvertNowForm
from pipeline.intake import MalformedPayload, parse_payload
from pipeline.models import ConversionJob, Operation, PushEvent
from pipeline.naming import suffix
from registries.actions import check_webhook_secret
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


@csrf_exempt
@require_POST
def webhook_intake(request, instance_id: str):
    """Registry push notifications for one instance (no login: authenticated by the webhook secret)."""
    known = instance_id.isascii() and instance_id.isdigit() and len(instance_id) < 19
    instance = Instance.objects.filter(pk=int(instance_id)).first() if known else None
    if instance is None:
        return _error(404, "Unknown instance. Check the webhook URL on the instance's page.")
    if not check_webhook_secret(instance, request.headers.get("Authorization", "")):
        return _error(401, "Missing or wrong webhook secret in the Authorization header.")
    limit = settings.APPARATE_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return _error(400, "Content-Length is not a number.")
    if declared > limit:
        return _error(413, f"The body is larger than {limit} bytes.")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _error(413, f"The body is larger than {limit} bytes.")
    try:
        parsed = parse_payload(body)
    except MalformedPayload as error:
        return _error(400, str(error))
    events = [actions.record_push(instance, push) for push in parsed.pushes]
    return JsonResponse(
        {
            "received": len(events),
            "ignored": parsed.ignored,
            "events": [{"id": e.pk, "outcome": e.outcome, "reason": e.reason} for e in events],
        },
        status=202,
    )


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
        return stop_polling_when(render(request, "pipeline/job_detail.html#progress",
                                        {"job": job, "retry_offered": actions.retry_offered(job)}), job.is_terminal)
    return render(request, "pipeline/job_detail.html", {
        "job": job, "retry_offered": actions.retry_offered(job),
        "events": job.push_events.order_by("-received_at", "-id")[:EVENTS_PAGE_SIZE],
        "twin_rows": job.twins.order_by("twin_tag"),
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
