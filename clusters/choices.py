"""Statuses and other choices of the clusters app, with the colour each shows in and TERMINAL sets."""

from django.db import models


class AuthMethod(models.TextChoices):
    KUBECONFIG = "kubeconfig", "Kubeconfig"
    TOKEN = "token", "API server URL and bearer token"


class ConnectionStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not tested"
    OK = "ok", "Connected"
    UNREACHABLE = "unreachable", "Unreachable"
    UNAUTHORIZED = "unauthorized", "Credentials refused"
    ERROR = "error", "Error"


class SyncStatus(models.TextChoices):
    IDLE = "idle", "Idle"
    QUEUED = "queued", "Sync queued"
    RUNNING = "running", "Syncing"


SYNC_BUSY = {SyncStatus.QUEUED, SyncStatus.RUNNING}


class Compatibility(models.TextChoices):
    COMPATIBLE = "compatible", "Compatible"
    WARNING = "warning", "Compatible, with a warning"
    INCOMPATIBLE = "incompatible", "Incompatible"


# A node with a warning can still load accelerated images (e.g. CentOS once FUSE is installed).
USABLE_COMPATIBILITY = {Compatibility.COMPATIBLE, Compatibility.WARNING}


class LazyPull(models.TextChoices):
    """Whether a node starts accelerated twins lazily, from its agent's report (see Node.lazy_pull_reason)."""

    READY = "ready", "Ready to lazy-pull"
    # An accelerated twin is a valid OCI image: without a ready agent the node pulls it in full.
    PULLS_IN_FULL = "pulls_in_full", "Pulls in full until the agent is ready"
    NOT_LABELLED = "not_labelled", "Not labelled"


class LabelOperation(models.TextChoices):
    LABEL = "label", "Label"
    UNLABEL = "unlabel", "Remove label"


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partly failed"
    FAILED = "failed", "Failed"


JOB_TERMINAL = {JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED}


class LabelResultStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    UNCHANGED = "unchanged", "Already so"
    REFUSED = "refused", "Refused (incompatible)"
    DENIED = "denied", "Denied by Kubernetes RBAC"
    NOT_FOUND = "not_found", "Node no longer exists"
    FAILED = "failed", "Failed"


LABEL_RESULT_TERMINAL = {s for s in LabelResultStatus if s != LabelResultStatus.PENDING}
LABEL_RESULT_OK = {LabelResultStatus.DONE, LabelResultStatus.UNCHANGED}


class SuiteOperation(models.TextChoices):
    INSTALL = "install", "Install"
    UPGRADE = "upgrade", "Upgrade"
    UNINSTALL = "uninstall", "Uninstall"


class SuiteStatus(models.TextChoices):
    NOT_INSTALLED = "not_installed", "Not installed"
    PENDING = "pending", "Pending"
    PREFLIGHT = "preflight", "Preflight checks"
    APPLYING = "applying", "Applying objects"
    ROLLING_OUT = "rolling_out", "Rolling out"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    CLEANING_NODES = "cleaning_nodes", "Waiting for the nodes to clean up"
    UNINSTALLING = "uninstalling", "Uninstalling"


SUITE_TERMINAL = {SuiteStatus.NOT_INSTALLED, SuiteStatus.READY, SuiteStatus.FAILED}
SUITE_BUSY = {SuiteStatus.PENDING, SuiteStatus.PREFLIGHT, SuiteStatus.APPLYING, SuiteStatus.CLEANING_NODES,
              SuiteStatus.UNINSTALLING}
# Busy statuses a worker is running (a watcher task for CLEANING_NODES): stale when it stopped moving.
SUITE_WORKING = SUITE_BUSY - {SuiteStatus.PENDING}


class DeployStatus(models.TextChoices):
    PREVIEWED = "previewed", "Previewed, not confirmed"
    PENDING = "pending", "Pending"
    APPLYING = "applying", "Applying"
    SUCCEEDED = "succeeded", "Applied"
    FAILED = "failed", "Failed"


DEPLOY_TERMINAL = {DeployStatus.SUCCEEDED, DeployStatus.FAILED}


class RolloutState(models.TextChoices):
    """Where an applied Deployment's rollout stands, as the console last read it."""

    PROGRESSING = "progressing", "Rolling out"
    COMPLETE = "complete", "Complete"
    STALLED = "stalled", "Not complete"  # the watch ended before every pod was ready
    GONE = "gone", "Deployment gone"


ROLLOUT_FINAL = frozenset({RolloutState.COMPLETE, RolloutState.STALLED, RolloutState.GONE})
ROLLOUT_COLOURS = {RolloutState.PROGRESSING: "blue", RolloutState.COMPLETE: "green", RolloutState.STALLED: "amber",
                   RolloutState.GONE: "grey"}


COLOURS = {
    # colour names map to CSS classes `badge-<colour>`
    ConnectionStatus.UNKNOWN: "grey",
    ConnectionStatus.OK: "green",
    ConnectionStatus.UNREACHABLE: "red",
    ConnectionStatus.UNAUTHORIZED: "red",
    ConnectionStatus.ERROR: "red",
    SyncStatus.QUEUED: "blue",
    SyncStatus.RUNNING: "blue",
    Compatibility.COMPATIBLE: "green",
    Compatibility.WARNING: "amber",
    Compatibility.INCOMPATIBLE: "red",
    JobStatus.PENDING: "grey",
    JobStatus.RUNNING: "blue",
    JobStatus.SUCCEEDED: "green",
    JobStatus.PARTIAL: "amber",
    JobStatus.FAILED: "red",
    LabelResultStatus.DONE: "green",
    LabelResultStatus.UNCHANGED: "green",
    LabelResultStatus.REFUSED: "amber",
    LabelResultStatus.DENIED: "red",
    LabelResultStatus.NOT_FOUND: "amber",
    SuiteStatus.NOT_INSTALLED: "grey",
    SuiteStatus.PREFLIGHT: "blue",
    SuiteStatus.APPLYING: "blue",
    SuiteStatus.ROLLING_OUT: "blue",
    SuiteStatus.READY: "green",
    SuiteStatus.CLEANING_NODES: "blue",
    SuiteStatus.UNINSTALLING: "blue",
    DeployStatus.PREVIEWED: "grey",
    DeployStatus.APPLYING: "blue",
    LazyPull.READY: "green",
    LazyPull.PULLS_IN_FULL: "amber",
    LazyPull.NOT_LABELLED: "grey",
}


def colour(value: str) -> str:
    """The badge colour of any status value of this app (grey when it has none)."""
    return COLOURS.get(value, "grey")
