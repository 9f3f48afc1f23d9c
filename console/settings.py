"""Settings for the apparate console, read from the environment.

Every setting has an embedded default that needs no server (SQLite, kombu's filesystem
transport), so `make run` works on a fresh machine. Production sets DATABASE_URL,
CELERY_BROKER_URL, SECRET_KEY, FIELD_ENCRYPTION_KEY and ALLOWED_HOSTS (see README).
"""

import contextlib
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from console.local_secrets import load_or_create_local_secrets, make_private

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("APPARATE_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int, minimum: int, maximum: int) -> int:
    """An integer setting from minimum to maximum; anything else stops the start with a message naming it."""
    value = os.environ.get(name, str(default)).strip()
    if not (value.isascii() and value.isdigit()) or not minimum <= int(value) <= maximum:
        raise ImproperlyConfigured(f"{name} must be a whole number from {minimum} to {maximum}, not '{value}'.")
    return int(value)


# The local secrets file is only read (and created) when a key is not given in the environment.
_local = (
    {}
    if os.environ.get("SECRET_KEY") and os.environ.get("FIELD_ENCRYPTION_KEY")
    else load_or_create_local_secrets(VAR_DIR / "local-secrets.json")
)
SECRET_KEY = os.environ.get("SECRET_KEY") or _local["SECRET_KEY"]
# Fernet keys, comma-separated: the first encrypts, all decrypt (key rotation).
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEY", _local.get("FIELD_ENCRYPTION_KEY", ""))

DEBUG = env_bool("DEBUG")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
# Behind a TLS-terminating reverse proxy: trust its X-Forwarded-Proto and X-Forwarded-Host, so
# absolute URLs (webhook URLs, redirects) use the public scheme and host. Only when the proxy sets them.
USE_X_FORWARDED_HEADERS = env_bool("USE_X_FORWARDED_HEADERS")
if USE_X_FORWARDED_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
# Base URL the console is reached at, used to print webhook URLs (e.g. https://apparate.example).
APPARATE_PUBLIC_URL = os.environ.get("APPARATE_PUBLIC_URL", "").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "axes",
    # apparate's apps, bottom layer first; each imports only the ones above it in this list.
    "core",
    "registries",
    "rules",
    "pipeline",
    "clusters",
    "console",
]

MIDDLEWARE = [
    # First: refuse oversized bodies before anything (CSRF, DRF parsers) reads them.
    "core.errors.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "core.audit.AuditContextMiddleware",
    # Last: turns a lockout flagged during authentication into core.auth.lockout_response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.console",
            ],
            # `|reveal` for text from outside, and `|duration`, `|ago`, `|at` (core/formatting.py), in every template.
            "builtins": ["core.templatetags.text_tags", "core.templatetags.format_tags"],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'apparate.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
# Seconds a statement waits for a lock another connection holds before it fails; the web then
# answers 503 with Retry-After (core.errors) instead of hanging.
DATABASE_LOCK_TIMEOUT = float(os.environ.get("DATABASE_LOCK_TIMEOUT", "5"))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker share the file: WAL and immediate transactions avoid
    # "database is locked" under concurrent writers.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": DATABASE_LOCK_TIMEOUT,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = f"{_options.get('options', '')} -c lock_timeout={int(DATABASE_LOCK_TIMEOUT * 1000)}".strip()

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# django-axes first: a locked-out username or address is refused before any password is hashed.
AUTHENTICATION_BACKENDS = ["core.auth.LockoutBackend", "django.contrib.auth.backends.ModelBackend"]
# Failed logins (login page, admin, token endpoint) allowed per username and per client address
# before both are locked for APPARATE_LOGIN_LOCKOUT_SECONDS; a successful login resets the count.
APPARATE_LOGIN_FAILURE_LIMIT = int(os.environ.get("APPARATE_LOGIN_FAILURE_LIMIT", "10"))
APPARATE_LOGIN_LOCKOUT_SECONDS = float(os.environ.get("APPARATE_LOGIN_LOCKOUT_SECONDS", "900"))
AXES_FAILURE_LIMIT = APPARATE_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=APPARATE_LOGIN_LOCKOUT_SECONDS)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
# Attempts during a lockout are refused without being recorded (and without extending it).
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_DISABLE_ACCESS_LOG = True  # no row per successful login (scripts fetch tokens often)
AXES_LOCKOUT_CALLABLE = "core.auth.lockout_response"
AXES_CLIENT_IP_CALLABLE = "core.auth.client_ip"
# API tokens expire this many days after they were issued (POST /api/v1/auth/token/ then issues a new one).
APPARATE_TOKEN_LIFETIME_DAYS = float(os.environ.get("APPARATE_TOKEN_LIFETIME_DAYS", "30"))

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
# WhiteNoise serves from the app folders until `collectstatic` fills STATIC_ROOT; it must exist
# (a read-only deployment creates it with collectstatic at build time).
with contextlib.suppress(OSError):
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES")
CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES")
X_FRAME_OPTIONS = "DENY"
# Served over HTTPS (SECURE_COOKIES): browsers keep to HTTPS for this host (HSTS).
SECURE_HSTS_SECONDS = int(os.environ.get("APPARATE_HSTS_SECONDS", "31536000")) if env_bool("SECURE_COOKIES") else 0
# Content-Security-Policy (django-csp): every script and style comes from our own static files; no
# inline script, inline event handler, inline style element or eval anywhere (htmx is configured
# for it in base.html). Swagger UI's icons are data: images.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

REST_FRAMEWORK = {
    # Token first: requests without valid credentials get 401 with `WWW-Authenticate: Token`.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.auth.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.roles.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "apparate API",
    "DESCRIPTION": "Registry instances, acceleration rules, push events, jobs and clusters.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The schema and Swagger UI need the viewer role (session or token), like every API read.
    "SERVE_PERMISSIONS": ["core.roles.RolePermission"],
    # validatorUrl null: Swagger UI would otherwise fetch a badge from validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None, "persistAuthorization": True},
    # Choice sets whose field names collide across apps get explicit component names.
    "ENUM_NAME_OVERRIDES": {
        "LabelOperationEnum": "clusters.choices.LabelOperation",
        "SuiteOperationEnum": "clusters.choices.SuiteOperation",
    },
}

# Celery: the embedded default is kombu's filesystem transport under var/ (no server needed).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
# Local state is private to this user: var/ 0700, the SQLite file (tokens, sessions, password
# hashes) and the beat schedule 0600, the broker's folders 0700.
_broker_dir = VAR_DIR / "broker"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
_sqlite_file = Path(DATABASES["default"]["NAME"]) if DATABASES["default"]["ENGINE"].endswith("sqlite3") else None
make_private(
    VAR_DIR,
    # The embedded database first (created 0600 when missing), then beat's schedule files.
    files=[*([_sqlite_file] if _sqlite_file and _sqlite_file.parent == VAR_DIR else []),
           Path(CELERY_BEAT_SCHEDULE_FILENAME)],
    subdirectories=[_broker_dir, *(_broker_dir / sub for sub in ("queue", "processed", "control"))]
    if CELERY_BROKER_URL.startswith("filesystem://") else [],
)
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER")
CELERY_BEAT_SCHEDULE: dict = {}
# Workers report in every APPARATE_HEARTBEAT_INTERVAL seconds (a thread of each worker, plus a beat
# task through the queue); a worker run silent for three intervals counts as gone: the dashboard
# warns, and its running jobs are queued again by the check that runs every APPARATE_ORPHAN_CHECK_INTERVAL.
APPARATE_HEARTBEAT_INTERVAL = float(os.environ.get("APPARATE_HEARTBEAT_INTERVAL", "15"))
APPARATE_ORPHAN_CHECK_INTERVAL = float(os.environ.get("APPARATE_ORPHAN_CHECK_INTERVAL", "30"))
CELERY_BEAT_SCHEDULE["console-heartbeat"] = {"task": "console.tasks.heartbeat", "schedule": APPARATE_HEARTBEAT_INTERVAL}
# On PostgreSQL, the jobs webhook deliveries make are handed to workers by a dispatcher thread of each
# worker: at once on the database's notification, and every APPARATE_DISPATCH_POLL seconds in any case
# (pipeline.dispatch).
APPARATE_DISPATCH_POLL = float(os.environ.get("APPARATE_DISPATCH_POLL", "5"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Product settings -------------------------------------------------------------------
# Suffix of accelerated tags: `nginx:1.27` becomes `nginx:1.27-apparate`.
APPARATE_ACCELERATED_SUFFIX = os.environ.get("APPARATE_ACCELERATED_SUFFIX", "-apparate")
# Largest request body of any page or API call (bytes), refused with 413 before parsing
# (core.errors.RequestBodyLimitMiddleware); webhooks have their own limit below.
APPARATE_REQUEST_MAX_BYTES = int(os.environ.get("APPARATE_REQUEST_MAX_BYTES", str(1 << 20)))
DATA_UPLOAD_MAX_MEMORY_SIZE = APPARATE_REQUEST_MAX_BYTES
# Largest webhook body accepted (bytes); larger answers 413.
APPARATE_WEBHOOK_MAX_BYTES = int(os.environ.get("APPARATE_WEBHOOK_MAX_BYTES", str(1 << 20)))
# Send test event: how long the console waits for its own webhook URL to answer.
APPARATE_WEBHOOK_TEST_TIMEOUT = float(os.environ.get("APPARATE_WEBHOOK_TEST_TIMEOUT", "5"))
# Timeout (seconds) of each registry request, from the console ("Test connection") and the workers.
APPARATE_REGISTRY_TIMEOUT = float(os.environ.get("APPARATE_REGISTRY_TIMEOUT", "10"))
# Node label that marks a Kubernetes node as able to load accelerated images.
APPARATE_NODE_LABEL_KEY = os.environ.get("APPARATE_NODE_LABEL_KEY", "cloud.tencent.com/apparate")
APPARATE_NODE_LABEL_VALUE = os.environ.get("APPARATE_NODE_LABEL_VALUE", "true")

# --- Clusters (issue 5) -------------------------------------------------------------------
# Node compatibility thresholds (from the product's documented requirements).
APPARATE_MIN_KUBERNETES_VERSION = os.environ.get("APPARATE_MIN_KUBERNETES_VERSION", "1.16")
APPARATE_MIN_CONTAINERD_VERSION = os.environ.get("APPARATE_MIN_CONTAINERD_VERSION", "1.4.3")
APPARATE_SUPPORTED_OS = env_list("APPARATE_SUPPORTED_OS", "Ubuntu,TencentOS,CentOS")
# OS families that need FUSE installed on the node (`yum install -y fuse`): a warning, not a refusal.
APPARATE_FUSE_WARNING_OS = env_list("APPARATE_FUSE_WARNING_OS", "CentOS")
# Timeout (seconds) of each Kubernetes API call.
APPARATE_KUBE_TIMEOUT = float(os.environ.get("APPARATE_KUBE_TIMEOUT", "10"))
# Labelling: concurrent PATCHes per cluster and attempts per node (409, 429, 5xx are retried).
APPARATE_LABEL_CONCURRENCY = int(os.environ.get("APPARATE_LABEL_CONCURRENCY", "16"))
APPARATE_LABEL_MAX_ATTEMPTS = int(os.environ.get("APPARATE_LABEL_MAX_ATTEMPTS", "5"))
# Seconds between periodic node syncs of every cluster.
APPARATE_NODE_SYNC_INTERVAL = float(os.environ.get("APPARATE_NODE_SYNC_INTERVAL", "300"))
# Acceleration suite: namespace, node agent image (built from agent/Dockerfile, `make agent-image`)
# and version (its tag), rollout watch timeout (seconds).
APPARATE_SUITE_NAMESPACE = os.environ.get("APPARATE_SUITE_NAMESPACE", "apparate-system")
APPARATE_SUITE_IMAGE = os.environ.get("APPARATE_SUITE_IMAGE", "ghcr.io/apparate/agent")
APPARATE_SUITE_VERSION = os.environ.get("APPARATE_SUITE_VERSION", "1.0.0")
APPARATE_SUITE_ROLLOUT_TIMEOUT = float(os.environ.get("APPARATE_SUITE_ROLLOUT_TIMEOUT", "900"))
# How long a deploy page's rollout is read again every second after the apply (then: "Check again").
APPARATE_DEPLOY_ROLLOUT_WATCH = float(os.environ.get("APPARATE_DEPLOY_ROLLOUT_WATCH", "300"))
# Seconds an uninstall waits for every node's agent to confirm its cleanup before it may be forced.
APPARATE_SUITE_UNINSTALL_TIMEOUT = float(os.environ.get("APPARATE_SUITE_UNINSTALL_TIMEOUT", "600"))
# A suite operation that has not moved for this many seconds lost its worker: it is picked up again,
# up to APPARATE_SUITE_MAX_ATTEMPTS times, then failed with that reason.
APPARATE_SUITE_STALE_AFTER = float(os.environ.get("APPARATE_SUITE_STALE_AFTER", "300"))
APPARATE_SUITE_MAX_ATTEMPTS = int(os.environ.get("APPARATE_SUITE_MAX_ATTEMPTS", "3"))
# An agent report older than this (seconds) no longer counts: agents report at least every 300 s.
APPARATE_AGENT_REPORT_STALE_AFTER = float(os.environ.get("APPARATE_AGENT_REPORT_STALE_AFTER", "900"))
CELERY_BEAT_SCHEDULE["clusters-recover-suites"] = {
    "task": "clusters.tasks.recover_stale_suites",
    "schedule": 60.0,
}
CELERY_BEAT_SCHEDULE["clusters-sync-nodes"] = {
    "task": "clusters.tasks.sync_all_clusters",
    "schedule": APPARATE_NODE_SYNC_INTERVAL,
}

# --- Conversion pipeline (issue 4) ----------------------------------------------------------
# Attempts per job before a transient registry failure (5xx, 429, timeouts) fails it for good.
APPARATE_JOB_MAX_ATTEMPTS = int(os.environ.get("APPARATE_JOB_MAX_ATTEMPTS", "5"))
# Retry delay: base·2^(attempt-1) seconds, capped, with jitter.
APPARATE_JOB_BACKOFF_BASE = float(os.environ.get("APPARATE_JOB_BACKOFF_BASE", "10"))
APPARATE_JOB_BACKOFF_CAP = float(os.environ.get("APPARATE_JOB_BACKOFF_CAP", "600"))
# Retries of one registry request (5xx, 429, resets) inside a job attempt, before the attempt fails.
APPARATE_REGISTRY_RETRIES = int(os.environ.get("APPARATE_REGISTRY_RETRIES", "4"))
# Seconds between progress writes of a running job.
APPARATE_JOB_PROGRESS_INTERVAL = float(os.environ.get("APPARATE_JOB_PROGRESS_INTERVAL", "1"))
# Where workers spool layers while converting (the system temp directory when blank).
APPARATE_JOB_WORKDIR = os.environ.get("APPARATE_JOB_WORKDIR", "")
# Seconds between reconciler passes over every instance with acceleration on.
APPARATE_RECONCILE_INTERVAL = float(os.environ.get("APPARATE_RECONCILE_INTERVAL", "900"))
CELERY_BEAT_SCHEDULE["pipeline-requeue-orphans"] = {
    "task": "pipeline.tasks.requeue_orphaned_jobs_task",
    "schedule": APPARATE_ORPHAN_CHECK_INTERVAL,
}
CELERY_BEAT_SCHEDULE["rules-reconcile"] = {
    "task": "rules.tasks.reconcile_all_task",
    "schedule": APPARATE_RECONCILE_INTERVAL,
}
# Startup bytes of twins made before the figure was recorded are read from the registry (Range requests) in
# batches of this many twin manifests per task; a twin the registry failed for is tried again after
# APPARATE_STARTUP_RETRY_AFTER seconds; beat looks for waiting twins every APPARATE_STARTUP_MEASURE_INTERVAL.
APPARATE_STARTUP_BATCH = int(os.environ.get("APPARATE_STARTUP_BATCH", "20"))
APPARATE_STARTUP_RETRY_AFTER = float(os.environ.get("APPARATE_STARTUP_RETRY_AFTER", "900"))
APPARATE_STARTUP_MEASURE_INTERVAL = float(os.environ.get("APPARATE_STARTUP_MEASURE_INTERVAL", "600"))
CELERY_BEAT_SCHEDULE["pipeline-measure-startup"] = {
    "task": "pipeline.tasks.measure_startup_all_task",
    "schedule": APPARATE_STARTUP_MEASURE_INTERVAL,
}
# The Images page reads rows; a view enqueues a background refresh when they are older than this (seconds).
APPARATE_IMAGES_REFRESH_AGE = float(os.environ.get("APPARATE_IMAGES_REFRESH_AGE", "300"))
# Manifest HEADs and reads one Images refresh has in flight at once (1: one after another). More
# threads than this mostly meet the registry's rate limits.
APPARATE_IMAGES_REFRESH_CONCURRENCY = env_int("APPARATE_IMAGES_REFRESH_CONCURRENCY", 8, 1, 32)
# Redis/SQS brokers: seconds before a message taken by a worker that vanished is delivered again.
APPARATE_BROKER_VISIBILITY_TIMEOUT = float(os.environ.get("APPARATE_BROKER_VISIBILITY_TIMEOUT", "3600"))
if CELERY_BROKER_URL.startswith(("redis://", "rediss://", "sqs://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": APPARATE_BROKER_VISIBILITY_TIMEOUT}
# Bearer token for /metrics (Prometheus); without it, the endpoint needs a logged-in viewer.
APPARATE_METRICS_TOKEN = os.environ.get("APPARATE_METRICS_TOKEN", "")
