"""Pages of the clusters app: clusters, nodes, label jobs, the acceleration suite and deploys.

Views are thin: load the object, call one verb in clusters/actions/, render a page, a partial or
a redirect. They never call Kubernetes themselves. Reads need the viewer role; registering,
editing or deleting a cluster (its credentials) needs admin; connection tests, syncs, labelling,
suite operations and deploys need operator. The Helm chart carries the registry password only
for admins (operators get it with the password left blank).
"""

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import trigger_client_event

from clusters import helm
from clusters.actions.deploy import DeployRefused, confirm_deploy, plan_deploy, preview_deploy, watch_rollout
from clusters.actions.labelling import request_labelling, select_nodes
from clusters.actions.suite import SuiteBusy, SuiteNotInstalled, request_suite_operation, suite_params
from clusters.actions.sync import annotate_counts, request_sync, test_connection
from clusters.choices import (
    JOB_TERMINAL,
    SUITE_TERMINAL,
    SYNC_BUSY,
    Compatibility,
    DeployStatus,
    LabelResultStatus,
)
from clusters.forms import ClusterForm, DeployForm, LabelForm, SuiteForm
from clusters.kube import Connection
from clusters.models import Cluster, DeployRequest, LabelJob, Node, Suite
from core.htmx import next_url, stop_polling_when, success_redirect
from core.roles import Role, has_role, role_required
from core.sorting import sort_queryset
from registries.models import Instance

PAGE_SIZE = 25
NODE_PAGE_SIZE = 100
CLUSTER_SORTS = {"name": "name", "nodes": "node_count", "compatible": "compatible_count",
                 "labelled": "labelled_count", "ready": "ready_count", "synced": "last_synced_at"}
NODE_SORTS = {"name": "name", "cluster": "cluster__name", "compatibility": "compatibility",
              "kubelet": "kubelet_version", "runtime": "runtime_version", "os": "os_image"}
admin_writes = role_required(read_role=Role.ADMIN, write_role=Role.ADMIN)
operator_writes = role_required(read_role=Role.OPERATOR, write_role=Role.OPERATOR)


def _label_context() -> dict:
    return {"label_key": settings.APPARATE_NODE_LABEL_KEY, "label_value": settings.APPARATE_NODE_LABEL_VALUE,
            "label_effects": LabelForm.EFFECTS}


def _filtered_nodes(request, nodes):
    search = request.GET.get("q", "").strip()
    if search:
        nodes = nodes.filter(Q(name__icontains=search) | Q(os_image__icontains=search))
    verdict = request.GET.get("compatibility", "")
    if verdict in Compatibility.values:
        nodes = nodes.filter(compatibility=verdict)
    labelled = request.GET.get("labelled", "")
    if labelled in {"yes", "no"}:
        nodes = nodes.filter(labelled=labelled == "yes")
    return sort_queryset(nodes, request.GET.get("sort", ""), NODE_SORTS, "name")


# --- clusters -----------------------------------------------------------------------------
@role_required()
def cluster_list(request):
    clusters = annotate_counts(Cluster.objects.all())
    search = request.GET.get("q", "").strip()
    if search:
        clusters = clusters.filter(Q(name__icontains=search) | Q(server__icontains=search))
    clusters = sort_queryset(clusters, request.GET.get("sort", ""), CLUSTER_SORTS, "name")
    page = Paginator(clusters, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "search": search, "total": Cluster.objects.count()}
    template = "clusters/cluster_list.html#results" if request.htmx else "clusters/cluster_list.html"
    return render(request, template, context)


@admin_writes
def cluster_create(request):
    return _cluster_form(request, Cluster())


@admin_writes
def cluster_edit(request, pk):
    return _cluster_form(request, get_object_or_404(Cluster, pk=pk))


def _cluster_form(request, cluster: Cluster):
    """Register or edit; a new cluster, or one whose connection changed, is tested and synced by a worker."""
    before = Connection.of(cluster) if cluster.pk else None
    form = ClusterForm(request.POST or None, request.FILES or None, instance=cluster)
    if request.method == "POST" and form.is_valid():
        cluster = form.save()
        if Connection.of(cluster) != before:
            request_sync(cluster, test_first=True)
            messages.success(request, f"Cluster {cluster.name} saved. Its connection is being tested and its nodes "
                                      "synced.")
        else:
            messages.success(request, f"Cluster {cluster.name} saved.")
        return success_redirect(request, reverse("clusters:detail", args=[cluster.pk]))
    template = "clusters/cluster_form.html#form" if request.htmx else "clusters/cluster_form.html"
    return render(request, template, {"form": form, "cluster": cluster if cluster.pk else None})


@admin_writes
def cluster_delete(request, pk):
    cluster = get_object_or_404(Cluster, pk=pk)
    if request.method == "POST":
        name = cluster.name
        cluster.delete()
        messages.success(request, f"Cluster {name} removed from the console (nothing was changed in the cluster).")
        return success_redirect(request, reverse("clusters:list"))
    return render(request, "clusters/cluster_confirm_delete.html", {"cluster": cluster})


@role_required()
def cluster_detail(request, pk):
    cluster = get_object_or_404(annotate_counts(Cluster.objects.all()), pk=pk)
    nodes = _filtered_nodes(request, Node.objects.filter(cluster=cluster).select_related("cluster"))
    page = Paginator(nodes, NODE_PAGE_SIZE).get_page(request.GET.get("page"))
    suite = Suite.objects.filter(cluster=cluster).select_related("instance").first()
    context = {
        "cluster": cluster, "page": page,
        "jobs": LabelJob.objects.filter(results__cluster=cluster).distinct()[:5],
        "deploys": cluster.deploys.exclude(status=DeployStatus.PREVIEWED)[:5],
        "compatibility_choices": Compatibility.choices,
        "sync_busy": SYNC_BUSY, **_label_context(), **_suite_context(request, cluster, suite),
    }
    template = "clusters/cluster_detail.html#nodes" if request.htmx else "clusters/cluster_detail.html"
    return render(request, template, context)


@operator_writes
@require_POST
def cluster_test(request, pk):
    cluster = get_object_or_404(Cluster, pk=pk)
    ok, message = test_connection(cluster)
    return render(request, "clusters/cluster_detail.html#connection",
                  {"cluster": cluster, "result": {"ok": ok, "message": message}})


@operator_writes
@require_POST
def cluster_sync(request, pk):
    """Queue a node sync; htmx gets the overview card, which then polls the sync's progress."""
    cluster = request_sync(get_object_or_404(Cluster, pk=pk))
    if request.htmx:
        return cluster_sync_status(request, pk)
    messages.info(request, f"A sync of {cluster.name} is queued.")
    return redirect(reverse("clusters:detail", args=[cluster.pk]))


@role_required()
def cluster_sync_status(request, pk):
    """The overview card; htmx polls it every second while a sync is queued or running, then gets 286
    and the `nodes-synced` event, which reloads the node table."""
    cluster = get_object_or_404(annotate_counts(Cluster.objects.all()), pk=pk)
    done = cluster.sync_status not in SYNC_BUSY
    response = render(request, "clusters/cluster_detail.html#overview", {"cluster": cluster, "sync_busy": SYNC_BUSY})
    if done:
        trigger_client_event(response, "nodes-synced")
    return stop_polling_when(response, done)


# --- nodes and labelling ------------------------------------------------------------------
@role_required()
def node_list(request):
    nodes = Node.objects.select_related("cluster")
    cluster_ids = [int(c) for c in request.GET.getlist("cluster") if c.isdigit()]
    if cluster_ids:
        nodes = nodes.filter(cluster_id__in=cluster_ids)
    page = Paginator(_filtered_nodes(request, nodes), NODE_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "clusters": Cluster.objects.all(), "selected_clusters": cluster_ids,
               "compatibility_choices": Compatibility.choices, **_label_context()}
    template = "clusters/node_list.html#nodes" if request.htmx else "clusters/node_list.html"
    return render(request, template, context)


@operator_writes
@require_POST
def label_create(request):
    form = LabelForm(request.POST, node_ids=[int(n) for n in request.POST.getlist("nodes") if n.isdigit()])
    back = next_url(request, reverse("clusters:nodes"))
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return success_redirect(request, back)
    selection = form.selection()
    description = selection.pop("description")
    nodes = select_nodes(**selection)
    if not nodes.exists():
        messages.warning(request, "No node matches that selection; nothing was labelled.")
        return success_redirect(request, back)
    job = request_labelling(request.user, nodes, form.cleaned_data["operation"],
                                    form.cleaned_data["force"], description)
    return success_redirect(request, reverse("clusters:job", args=[job.pk]))


@role_required()
def job_list(request):
    """Label jobs, newest first; while one on the page is pending or running, htmx refreshes the rows
    every 2 seconds (286 stops it)."""
    page = Paginator(LabelJob.objects.select_related("requested_by"), PAGE_SIZE).get_page(request.GET.get("page"))
    live = any(job.status not in JOB_TERMINAL for job in page)
    if request.htmx and request.GET.get("partial") == "rows":
        return stop_polling_when(render(request, "clusters/job_list.html#rows", {"page": page, "live": live}),
                                 not live)
    return render(request, "clusters/job_list.html", {"page": page, "live": live})


@role_required()
def job_detail(request, pk):
    job = get_object_or_404(LabelJob.objects.select_related("requested_by"), pk=pk)
    results = job.results.select_related("cluster")
    status = request.GET.get("status", "")
    if status:
        results = results.filter(status=status)
    page = Paginator(results, NODE_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"job": job, "page": page, "terminal": job.status in JOB_TERMINAL,
               "result_statuses": LabelResultStatus.choices}
    if request.htmx and request.GET.get("progress"):
        return stop_polling_when(render(request, "clusters/job_detail.html#progress", context),
                                 job.status in JOB_TERMINAL)
    return render(request, "clusters/job_detail.html", context)


# --- suite ---------------------------------------------------------------------------------
def _suite_context(request, cluster: Cluster, suite: Suite | None) -> dict:
    """The suite panel: its state, the operations that state allows, the Helm chart form (its own
    field ids) and the `helm install` command with the values of the suite's instance filled in."""
    chosen = suite.instance if suite and suite.instance else Instance.objects.order_by("name").first()
    command = ""
    if chosen is not None:
        probe = Suite(cluster=cluster, namespace=suite.namespace, image=suite.image, version=suite.version) \
            if suite else Suite(cluster=cluster)
        probe.instance = chosen
        command = helm.install_command(suite_params(probe), include_password=has_role(request.user, Role.ADMIN))
    initial = {"instance": chosen.pk if chosen else None}
    return {"cluster": cluster, "suite": suite, "suite_terminal": SUITE_TERMINAL,
            "suite_form": SuiteForm(initial=initial), "helm_form": SuiteForm(initial=initial, auto_id="helm-%s"),
            "helm_command": command, "helm_instance": chosen}


@operator_writes
@require_POST
def suite_operate(request, pk):
    cluster = get_object_or_404(Cluster, pk=pk)
    form = SuiteForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            request_suite_operation(cluster, data["operation"], request.user, instance=data["instance"],
                                            namespace=data["namespace"], version=data["version"],
                                            force=data["force"])
        except (SuiteBusy, SuiteNotInstalled, ValueError) as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"Suite {data['operation']} started on {cluster.name}.")
    else:
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
    return success_redirect(request, reverse("clusters:detail", args=[cluster.pk]) + "#suite")


@role_required()
def suite_status(request, pk):
    """The suite panel; htmx polls it every second and gets 286 once the status is terminal."""
    cluster = get_object_or_404(Cluster, pk=pk)
    suite = Suite.objects.filter(cluster=cluster).select_related("instance").first()
    response = render(request, "clusters/cluster_detail.html#suite-status",
                      _suite_context(request, cluster, suite))
    return stop_polling_when(response, suite is None or suite.status in SUITE_TERMINAL)


@role_required(read_role=Role.OPERATOR)
def helm_chart(request, pk):
    cluster = get_object_or_404(Cluster, pk=pk)
    suite = Suite.objects.filter(cluster=cluster).select_related("instance").first()
    instance_id = request.GET.get("instance") or (suite.instance_id if suite else None)
    instance = Instance.objects.filter(pk=instance_id).first() if str(instance_id or "").isdigit() else None
    if instance is None:
        messages.error(request, "Choose a registry instance for the chart's pull secret.")
        return redirect(reverse("clusters:detail", args=[cluster.pk]) + "#suite")
    probe = suite or Suite(cluster=cluster)
    probe.instance = instance
    params = suite_params(probe)
    archive = helm.chart_archive(params, include_password=has_role(request.user, Role.ADMIN))
    response = HttpResponse(archive, content_type="application/gzip")
    response["Content-Disposition"] = f'attachment; filename="{helm.CHART_NAME}-{helm.CHART_VERSION}.tgz"'
    return response


# --- deploy --------------------------------------------------------------------------------
@operator_writes
def deploy(request):
    """GET: the form (prefilled from ?cluster=&instance=&image=). POST without `confirm`: a preview (the
    YAML and warnings, recorded). POST with `confirm` and the preview's id: confirm that preview if the
    fields still plan exactly what it showed, else show the new preview."""
    instance = request.GET.get("instance") or Instance.objects.values_list("pk", flat=True).first()
    initial = {"cluster": request.GET.get("cluster"), "instance": instance, "image": request.GET.get("image", ""),
               "namespace": request.GET.get("namespace") or "default", "name": request.GET.get("name", ""),
               "replicas": request.GET.get("replicas") or 1}
    form = DeployForm(request.POST or None, initial=initial)
    context = {"form": form}
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        plan = plan_deploy(data["cluster"], data["instance"], data["namespace"], data["name"],
                           data["replicas"], data["reference"], use_original=data["use_original"])
        if "confirm" in request.POST:
            try:
                confirmed = confirm_deploy(request.POST.get("preview", ""), request.user, plan.digest)
            except DeployRefused as refusal:
                context["refusal"] = str(refusal)
            else:
                return success_redirect(request, reverse("clusters:deploy-detail", args=[confirmed.pk]))
        context["plan"], context["preview"] = plan, preview_deploy(plan, request.user)
    template = "clusters/deploy.html#form" if request.htmx else "clusters/deploy.html"
    return render(request, template, context)


@role_required()
def deploy_detail(request, pk):
    """A deploy: its previewed YAML, then its progress; htmx polls while a worker applies it (286 when done)."""
    deploy = get_object_or_404(DeployRequest.objects.select_related("cluster", "instance", "requested_by"), pk=pk)
    watching = deploy.status in {DeployStatus.PENDING, DeployStatus.APPLYING} or deploy.rollout_watched
    context = {"deploy": deploy, "watching": watching,
               "rollout_watch_seconds": int(settings.APPARATE_DEPLOY_ROLLOUT_WATCH)}
    if request.htmx and request.GET.get("progress"):
        return stop_polling_when(render(request, "clusters/deploy_detail.html#progress", context), not watching)
    return render(request, "clusters/deploy_detail.html", context)


@require_POST
@role_required()
def deploy_rollout_watch(request, pk):
    """"Check again": watch an applied deploy's rollout for another while (a worker reads it)."""
    deploy = get_object_or_404(DeployRequest, pk=pk, status=DeployStatus.SUCCEEDED)
    watch_rollout(deploy)
    return success_redirect(request, reverse("clusters:deploy-detail", args=[deploy.pk]))
