"""Kubernetes clusters, their nodes, labelling jobs, the acceleration suite and deploys."""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from clusters.choices import (
    ROLLOUT_COLOURS,
    ROLLOUT_FINAL,
    AuthMethod,
    Compatibility,
    ConnectionStatus,
    DeployStatus,
    JobStatus,
    LabelOperation,
    LabelResultStatus,
    LazyPull,
    RolloutState,
    SuiteOperation,
    SuiteStatus,
    SyncStatus,
)
from clusters.validators import (
    validate_api_server_url,
    validate_dns_label,
    validate_dns_subdomain,
    validate_image_reference,
    validate_image_tag,
    validate_namespace_list,
    validate_pem_certificates,
)
from core.fields import EncryptedTextField

# Seconds past APPARATE_DEPLOY_ROLLOUT_WATCH after which a rollout still "rolling out" is no longer
# taken as watched: its worker is gone, and the deploy page offers Check again.
ROLLOUT_WATCH_GRACE = 30


def default_suite_namespace() -> str:
    return settings.APPARATE_SUITE_NAMESPACE


def default_deploy_namespaces() -> list[str]:
    return ["default"]


class Cluster(models.Model):
    """A Kubernetes cluster the console reaches with a bearer token or a client certificate.

    A kubeconfig upload is reduced to the chosen context's server, CA and credentials; the token
    and the client key are encrypted at rest and write-only.
    """

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    auth_method = models.CharField(max_length=20, choices=AuthMethod.choices, default=AuthMethod.TOKEN)
    context_name = models.CharField("kubeconfig context", max_length=253, blank=True)
    server = models.CharField(
        "API server URL", max_length=255, validators=[validate_api_server_url],
        help_text="e.g. https://10.0.0.1:6443",
    )
    ca_data = models.TextField(
        "CA certificate", blank=True, validators=[validate_pem_certificates],
        help_text="PEM of the CA that signed the API server's certificate.",
    )
    insecure_skip_tls_verify = models.BooleanField("skip TLS verification", default=False)
    tls_server_name = models.CharField(max_length=253, blank=True)
    token = EncryptedTextField("bearer token", blank=True)
    client_certificate = models.TextField(blank=True, validators=[validate_pem_certificates])
    client_key = EncryptedTextField(blank=True)
    auto_label = models.BooleanField(
        "label new compatible nodes on sync", default=False,
        help_text="Each sync labels compatible nodes seen for the first time.",
    )
    deploy_namespaces = models.JSONField(
        "deploy namespaces", default=default_deploy_namespaces, blank=True, validators=[validate_namespace_list],
        help_text="The namespaces operators may deploy into (none: no deploys on this cluster).",
    )
    connection_status = models.CharField(
        max_length=20, choices=ConnectionStatus.choices, default=ConnectionStatus.UNKNOWN
    )
    server_version = models.CharField(max_length=64, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    sync_status = models.CharField(max_length=10, choices=SyncStatus.choices, default=SyncStatus.IDLE,
                                   help_text="Whether a node sync asked for is queued or running.")
    sync_message = models.TextField(blank=True, help_text="What the last sync found, or why it failed.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Node(models.Model):
    """A node as last seen by a sync, with its compatibility verdict and reasons."""

    audit_log = False

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(max_length=253)
    uid = models.CharField(max_length=64, blank=True)
    resource_version = models.CharField(max_length=64, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    ready = models.BooleanField(default=False)
    kubelet_version = models.CharField(max_length=64, blank=True)
    container_runtime = models.CharField(max_length=32, blank=True)
    runtime_version = models.CharField(max_length=64, blank=True)
    os_image = models.CharField("OS image", max_length=255, blank=True)
    kernel_version = models.CharField(max_length=128, blank=True)
    architecture = models.CharField(max_length=32, blank=True)
    labelled = models.BooleanField(default=False, help_text="Carries the acceleration label.")
    agent_ready = models.BooleanField(default=False, help_text="Labelled, and its agent reports it ready to "
                                      "lazy-pull (containerd uses the loaded stargz snapshotter).")
    agent_report = models.JSONField(default=dict, blank=True,
                                    help_text="The agent's last report, from the Node's apparate.io/agent-status.")
    lazy_pull = models.CharField(max_length=20, choices=LazyPull.choices, default=LazyPull.NOT_LABELLED)
    lazy_pull_reason = models.TextField(blank=True, help_text="Why the node is not ready to lazy-pull.")
    compatibility = models.CharField(max_length=20, choices=Compatibility.choices, default=Compatibility.INCOMPATIBLE)
    reasons = models.JSONField(default=list, blank=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["cluster__name", "name"]
        constraints = [models.UniqueConstraint(fields=["cluster", "name"], name="clusters_node_unique_name")]
        indexes = [models.Index(fields=["cluster", "compatibility"]), models.Index(fields=["cluster", "labelled"])]

    def __str__(self):
        return f"{self.cluster.name}/{self.name}"

    @property
    def runtime(self) -> str:
        return f"{self.container_runtime}://{self.runtime_version}" if self.container_runtime else ""


class LabelJob(models.Model):
    """An operator's request to label or unlabel a set of nodes; one LabelResult per node.

    The request itself is written to the audit log when it is made; the row's progress is not.
    """

    audit_log = False

    operation = models.CharField(max_length=10, choices=LabelOperation.choices, default=LabelOperation.LABEL)
    force = models.BooleanField(default=False, help_text="Label incompatible nodes too.")
    selection = models.CharField(max_length=500, blank=True, help_text="How the nodes were chosen.")
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.PENDING)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    total = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.get_operation_display()} job #{self.pk}"


class LabelResult(models.Model):
    """What happened to one node in a label job."""

    audit_log = False

    job = models.ForeignKey(LabelJob, on_delete=models.CASCADE, related_name="results")
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="+")
    node = models.ForeignKey(Node, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    node_name = models.CharField(max_length=253)
    status = models.CharField(max_length=20, choices=LabelResultStatus.choices, default=LabelResultStatus.PENDING)
    message = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["cluster__name", "node_name"]
        indexes = [models.Index(fields=["job", "status"])]

    def __str__(self):
        return f"{self.node_name}: {self.status}"


class Suite(models.Model):
    """The acceleration suite of one cluster: what was asked, what was applied, how it rolls out.

    `applied` lists every object the console applied, with `created` telling whether it existed
    before; uninstall deletes exactly the created ones, once every node confirmed its cleanup (or
    when forced). `node_status` has one row per labelled node during a rollout, and the nodes still
    awaited during an uninstall. `updated_at` is the operation's heartbeat: a busy operation that
    stopped moving lost its worker. Each operator request is audited when made.
    """

    audit_log = False

    cluster = models.OneToOneField(Cluster, on_delete=models.CASCADE, related_name="suite")
    instance = models.ForeignKey(
        "registries.Instance", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Registry whose credentials the pull secret and agent configuration use.",
    )
    namespace = models.CharField(max_length=63, default=default_suite_namespace, validators=[validate_dns_label])
    image = models.CharField(max_length=512, blank=True)
    version = models.CharField(max_length=128, blank=True, validators=[validate_image_tag],
                               help_text="The agent image's tag.")
    operation = models.CharField(max_length=10, choices=SuiteOperation.choices, default=SuiteOperation.INSTALL)
    status = models.CharField(max_length=20, choices=SuiteStatus.choices, default=SuiteStatus.NOT_INSTALLED)
    preflight = models.JSONField(default=list, blank=True)
    applied = models.JSONField(default=list, blank=True)
    failed_object = models.CharField(max_length=300, blank=True)
    last_error = models.TextField(blank=True)
    desired = models.PositiveIntegerField(default=0)
    ready = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    node_status = models.JSONField(default=list, blank=True)
    force = models.BooleanField(default=False, help_text="Uninstall without waiting for the nodes to clean up.")
    cleanup_started_at = models.DateTimeField(null=True, blank=True,
                                              help_text="When the agents were asked to clean their nodes up.")
    attempts = models.PositiveIntegerField(default=0, help_text="Workers that took the operation up.")
    watch_id = models.CharField(max_length=32, blank=True, help_text="The watcher task chain that is current.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"suite on {self.cluster.name}"

    @property
    def cleanup_deadline(self):
        """When an uninstall stops waiting for the nodes (and may then be forced)."""
        if self.cleanup_started_at is None:
            return None
        return self.cleanup_started_at + timedelta(seconds=settings.APPARATE_SUITE_UNINSTALL_TIMEOUT)


class DeployRequest(models.Model):
    """A workload deployed from the console: a Deployment with the pull secret (and nodeSelector).

    A preview creates the row (previewed) with the plan's digest and YAML; only confirming that row
    applies it, in a worker, and only if the objects it builds still have the previewed digest. The
    confirmation is audited when it is made; previews and progress are not.
    """

    audit_log = False

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="deploys")
    instance = models.ForeignKey("registries.Instance", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    namespace = models.CharField(max_length=63, validators=[validate_dns_label])
    name = models.CharField(max_length=253, validators=[validate_dns_subdomain])
    replicas = models.PositiveIntegerField(default=1)
    image = models.CharField(max_length=512, validators=[validate_image_reference])
    accelerated = models.BooleanField(default=True, help_text="Scheduled onto labelled nodes only.")
    status = models.CharField(max_length=20, choices=DeployStatus.choices, default=DeployStatus.PREVIEWED)
    plan_digest = models.CharField(max_length=64, blank=True, help_text="sha256 of the previewed plan.")
    plan_yaml = models.TextField("previewed YAML", blank=True)
    warnings = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rollout = models.JSONField(default=dict, blank=True,
                               help_text="The Deployment's rollout as last read: state, replicas and one row per pod.")
    rollout_checked_at = models.DateTimeField(null=True, blank=True)
    rollout_watch_since = models.DateTimeField(
        null=True, blank=True, help_text="When the current watch of the rollout started (it stops after "
                                         "APPARATE_DEPLOY_ROLLOUT_WATCH seconds).")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.namespace}/{self.name} on {self.cluster.name}"

    @property
    def rollout_watched(self) -> bool:
        """True while a worker reads the rollout again every second (the page refreshes meanwhile): not
        final yet, and not past the watch's time (a watch whose worker died ends there too)."""
        if self.rollout_watch_since is None or self.rollout.get("state") in ROLLOUT_FINAL:
            return False
        return timezone.now() - self.rollout_watch_since <= timedelta(
            seconds=settings.APPARATE_DEPLOY_ROLLOUT_WATCH + ROLLOUT_WATCH_GRACE)

    @property
    def rollout_label(self) -> str:
        state = self.rollout.get("state", "")
        return RolloutState(state).label if state in RolloutState.values else ""

    @property
    def rollout_colour(self) -> str:
        return ROLLOUT_COLOURS.get(self.rollout.get("state", ""), "grey")
