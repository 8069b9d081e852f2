"""Glassbox settings: one module, driven by environment variables.

With nothing set, the platform runs on SQLite, a server-less Celery broker
(kombu's filesystem transport) and a local artifact folder, so `make run`
works on a bare machine. DATABASE_URL, CELERY_BROKER_URL and ARTIFACT_STORAGE
switch to PostgreSQL, Redis and S3-compatible storage without code changes.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def _env_list(name: str, default: list[str]) -> list[str]:
    # Set but empty means an empty list (e.g. "no evidence required").
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


GLASSBOX_ENV = os.environ.get("GLASSBOX_ENV", "development")
PRODUCTION = GLASSBOX_ENV == "production"

# Everything the platform writes on local disk lives under one folder.
DATA_DIR = Path(os.environ.get("GLASSBOX_DATA_DIR", BASE_DIR / "var")).resolve()

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production")
    # Local demo and tests only; production refuses to start without a real key.
    SECRET_KEY = "glassbox-insecure-development-key-do-not-use-in-production-0123456789"

DEBUG = _env_bool("DJANGO_DEBUG", not PRODUCTION)
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "" if PRODUCTION else "*").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI's files served by us: the API docs work with no internet.
    "drf_spectacular_sidecar",
    # The project package: the demo seeding command and shared plumbing (idempotency keys).
    "glassbox",
    "governance",
    "registry",
    "explanations",
    "rollouts",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "glassbox.middleware.RequestContextMiddleware",
    "glassbox.api_errors.ServiceUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "glassbox.urls"
WSGI_APPLICATION = "glassbox.wsgi.application"

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
                "glassbox.context_processors.roles",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'glassbox.sqlite3'}"),
        conn_max_age=_env_int("DATABASE_CONN_MAX_AGE", 0),
        # A persistent connection dropped while idle (database restarted,
        # backend terminated) is replaced before the next request uses it,
        # instead of failing that request with a 503.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo runs a web server and a worker against one file: wait for locks
    # instead of failing, and take the write lock at BEGIN so that two writers
    # never deadlock upgrading a read lock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# `make test` only: hashing every test user's password at full strength
# (PBKDF2, about 0.2 s each here) cost the suite minutes. The test target sets
# this (never honoured in production); the strong hashers stay listed, so
# any stored hash still verifies.
if os.environ.get("GLASSBOX_TEST_FAST_PASSWORD_HASHER") == "1" and not PRODUCTION:
    PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    ]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "registry:model-list"
LOGOUT_REDIRECT_URL = "login"


def _env_json(name: str, default):
    import json

    value = os.environ.get(name, "")
    if not value.strip():
        return default
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be JSON: {exc}") from None


# --- identity: local passwords and the company's identity provider (OIDC) ----
# Local accounts sign in with a password (login page, POST /api/v1/auth/token/);
# people of an OpenID Connect provider sign in through it once
# GLASSBOX_OIDC_CLIENT_ID is set (governance/identity.py, README "Connecting an
# identity provider"). The password backend comes first: sessions opened
# without a password (tests, the demo seed) use it.
AUTHENTICATION_BACKENDS = [
    "governance.identity.LocalPasswordBackend",
    "governance.identity.GlassboxOIDCBackend",
]
GLASSBOX_OIDC_ENABLED = bool(os.environ.get("GLASSBOX_OIDC_CLIENT_ID", ""))
# Local sign-in can be switched off only where the provider is on (someone must be able to sign in).
GLASSBOX_LOCAL_SIGNIN = _env_bool("GLASSBOX_LOCAL_SIGNIN", True) or not GLASSBOX_OIDC_ENABLED
# The name on the "Sign in with ..." button.
GLASSBOX_OIDC_PROVIDER_NAME = os.environ.get("GLASSBOX_OIDC_PROVIDER_NAME", "your company account")
# The provider's issuer (the `iss` of its ID tokens; accounts are linked by issuer and subject).
GLASSBOX_OIDC_ISSUER = os.environ.get("GLASSBOX_OIDC_ISSUER", "")
GLASSBOX_OIDC_USERNAME_CLAIM = os.environ.get("GLASSBOX_OIDC_USERNAME_CLAIM", "preferred_username")
GLASSBOX_OIDC_GROUPS_CLAIM = os.environ.get("GLASSBOX_OIDC_GROUPS_CLAIM", "groups")
# Provider group -> Glassbox role (engineer, reviewer, manager, admin), e.g.
# {"ml-engineers": "engineer", "model-risk": "reviewer"}. At every sign-in a
# person's roles become exactly those their groups map to.
GLASSBOX_OIDC_GROUP_ROLES = _env_json("GLASSBOX_OIDC_GROUP_ROLES", {})
# Provider group -> team membership, {"group": {"team": name, "role": "maintainer"|"engineer"|"viewer"}}:
# read and checked here; applied once teams exist.
GLASSBOX_OIDC_GROUP_TEAMS = _env_json("GLASSBOX_OIDC_GROUP_TEAMS", {})
# mozilla-django-oidc's own settings, from ours. They are always defined (empty
# when the provider is off): Django builds every backend on each sign-in.
OIDC_RP_CLIENT_ID = os.environ.get("GLASSBOX_OIDC_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = os.environ.get("GLASSBOX_OIDC_CLIENT_SECRET", "")
OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ.get("GLASSBOX_OIDC_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = os.environ.get("GLASSBOX_OIDC_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = os.environ.get("GLASSBOX_OIDC_USERINFO_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = os.environ.get("GLASSBOX_OIDC_JWKS_ENDPOINT", "") or None
OIDC_RP_SIGN_ALGO = os.environ.get("GLASSBOX_OIDC_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = os.environ.get("GLASSBOX_OIDC_SCOPES", "openid email profile groups")
OIDC_USE_PKCE = True
OIDC_TIMEOUT = _env_int("GLASSBOX_OIDC_TIMEOUT_SECONDS", 10)
OIDC_VERIFY_SSL = _env_bool("GLASSBOX_OIDC_VERIFY_TLS", True)
LOGIN_REDIRECT_URL_FAILURE = "/login/?oidc=failed"
if GLASSBOX_OIDC_ENABLED:
    _missing = [
        name
        for name, value in (
            ("GLASSBOX_OIDC_CLIENT_SECRET", OIDC_RP_CLIENT_SECRET),
            ("GLASSBOX_OIDC_ISSUER", GLASSBOX_OIDC_ISSUER),
            ("GLASSBOX_OIDC_AUTHORIZATION_ENDPOINT", OIDC_OP_AUTHORIZATION_ENDPOINT),
            ("GLASSBOX_OIDC_TOKEN_ENDPOINT", OIDC_OP_TOKEN_ENDPOINT),
            ("GLASSBOX_OIDC_USERINFO_ENDPOINT", OIDC_OP_USER_ENDPOINT),
            ("GLASSBOX_OIDC_JWKS_ENDPOINT", OIDC_OP_JWKS_ENDPOINT),
        )
        if not value
    ]
    if _missing:
        raise ImproperlyConfigured(f"GLASSBOX_OIDC_CLIENT_ID is set: also set {', '.join(_missing)}")
elif OIDC_OP_JWKS_ENDPOINT is None:
    # mozilla-django-oidc refuses to build its backend without a key source;
    # a placeholder while the provider is off (the backend then answers nothing).
    OIDC_OP_JWKS_ENDPOINT = "http://oidc-not-configured.invalid/jwks"

# --- artifacts -------------------------------------------------------------
# Uploads stream to a temporary file next to the artifact store so that
# accepting an artifact is a rename, not a second copy.
ARTIFACT_ROOT = Path(os.environ.get("ARTIFACT_ROOT", DATA_DIR / "artifacts")).resolve()
ARTIFACT_CACHE_DIR = Path(os.environ.get("ARTIFACT_CACHE_DIR", DATA_DIR / "artifact-cache")).resolve()
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "upload-tmp")
# Django's system check insists the folder exists before any upload arrives.
os.makedirs(FILE_UPLOAD_TEMP_DIR, exist_ok=True)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = _env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024)

ARTIFACT_STORAGE = os.environ.get("ARTIFACT_STORAGE", "local")
if ARTIFACT_STORAGE == "local":
    _artifact_backend = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(ARTIFACT_ROOT), "file_permissions_mode": 0o640},
    }
elif ARTIFACT_STORAGE == "s3":
    from botocore.config import Config as _BotoConfig

    # Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the instance's
    # role), read by boto3 itself. Short timeouts and few attempts: an outage
    # must answer 503 within seconds, and Celery retries the jobs it fails.
    _artifact_backend = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ.get("ARTIFACT_S3_BUCKET", "glassbox-artifacts"),
            "endpoint_url": os.environ.get("ARTIFACT_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("ARTIFACT_S3_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
            "addressing_style": os.environ.get("ARTIFACT_S3_ADDRESSING_STYLE") or None,
            # Artifacts are immutable and stored under their digest: never replaced.
            "file_overwrite": False,
            "querystring_auth": False,
            "client_config": _BotoConfig(
                connect_timeout=_env_int("ARTIFACT_S3_CONNECT_TIMEOUT", 5),
                read_timeout=_env_int("ARTIFACT_S3_READ_TIMEOUT", 60),
                retries={"mode": "standard", "max_attempts": _env_int("ARTIFACT_S3_MAX_ATTEMPTS", 3)},
            ),
        },
    }
else:
    raise ImproperlyConfigured(f"ARTIFACT_STORAGE must be 'local' or 's3', not {ARTIFACT_STORAGE!r}")
# How long /readyz trusts its last look at the artifact store (a HEAD of the bucket).
GLASSBOX_STORAGE_CHECK_SECONDS = _env_int("GLASSBOX_STORAGE_CHECK_SECONDS", 10)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "artifacts": _artifact_backend,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Limits on what an upload may be. Archives are checked member by member
# against these before anything is extracted.
GLASSBOX_UPLOAD_LIMITS = {
    "max_upload_bytes": _env_int("GLASSBOX_MAX_UPLOAD_BYTES", 2 * 1024**3),
    "max_members": _env_int("GLASSBOX_MAX_ARCHIVE_MEMBERS", 1000),
    "max_uncompressed_bytes": _env_int("GLASSBOX_MAX_UNCOMPRESSED_BYTES", 8 * 1024**3),
    "max_compression_ratio": _env_int("GLASSBOX_MAX_COMPRESSION_RATIO", 200),
    "max_dataset_bytes": _env_int("GLASSBOX_MAX_DATASET_BYTES", 200 * 1024**2),
    "max_dataset_rows": _env_int("GLASSBOX_MAX_DATASET_ROWS", 1_000_000),
}
# Loading a model to prove it works runs in a child process, so a broken or
# hostile artifact can neither crash nor bloat the web server.
GLASSBOX_LOAD_CHECK_TIMEOUT = _env_int("GLASSBOX_LOAD_CHECK_TIMEOUT", 600)
# Loaded models kept per process (web and workers), least recently used out.
GLASSBOX_PREDICTOR_CACHE_SIZE = _env_int("GLASSBOX_PREDICTOR_CACHE_SIZE", 4)

# --- REST API ----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # API tokens, stored hashed, optionally scoped (governance/token_auth.py).
        "governance.token_auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "glassbox.api_errors.json_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": None,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# How long the first answer to a POST with an Idempotency-Key is replayed to
# retries (glassbox/idempotency.py); after that the key may start new work.
GLASSBOX_IDEMPOTENCY_TTL_HOURS = _env_int("GLASSBOX_IDEMPOTENCY_TTL_HOURS", 24)
# Expired keys of users who never send another are purged by beat this often.
GLASSBOX_IDEMPOTENCY_PURGE_SECONDS = _env_int("GLASSBOX_IDEMPOTENCY_PURGE_SECONDS", 3600)
# The longest life an API token may be given, in days (0: no maximum). With a
# maximum, a token created without `expires_at` expires after it.
GLASSBOX_TOKEN_MAX_DAYS = _env_int("GLASSBOX_TOKEN_MAX_DAYS", 0)
SPECTACULAR_SETTINGS = {
    "TITLE": "Glassbox API",
    "DESCRIPTION": "Model governance: registry, reviews, explanations, rollouts, audit trail.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    # Several models have a `status`; name each choice set after its model.
    "ENUM_NAME_OVERRIDES": {
        "VersionStatusEnum": "registry.models.ModelVersion.Status",
        "ReviewStatusEnum": "governance.models.ReviewRequest.Status",
        "ReportStatusEnum": "explanations.models.ExplanationReport.Status",
    },
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents the JSON `detail` bodies of its 4xx and 503 answers.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "glassbox.api_schema.add_error_responses",
        # ...and who may call it (x-glassbox-access).
        "glassbox.api_schema.add_access_requirements",
    ],
}

# --- Celery ------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    # kombu's filesystem transport expects its folders to exist.
    for _folder in ("queue", "processed", "control"):
        os.makedirs(_broker_dir / _folder, exist_ok=True)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = "glassbox"
# Heavy explanation work has a queue of its own, so a long report never holds
# up the light jobs (rollout analysis, monitoring, the reaper, warming) on the
# default queue. A worker serves both unless started with -Q.
CELERY_TASK_QUEUES = (Queue("glassbox"), Queue("explanations"))
CELERY_TASK_ROUTES = {
    "explanations.tasks.run_report": {"queue": "explanations"},
    "explanations.tasks.run_chunk": {"queue": "explanations"},
    "explanations.tasks.finalize_report": {"queue": "explanations"},
    # Reads every artifact and dataset: heavy, so off the light queue.
    "governance.tasks.deep_verify": {"queue": "explanations"},
    # Archives and deletes expired prediction logs: long, so off the light queue too.
    "rollouts.tasks.apply_prediction_retention": {"queue": "explanations"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Periodic jobs, run by `celery worker -B` (the demo) or a separate `celery beat`.
CELERY_BEAT_SCHEDULE = {
    "explanations-reap-stale-work": {
        "task": "explanations.tasks.reap_stale_work",
        "schedule": float(_env_int("GLASSBOX_REAPER_INTERVAL_SECONDS", 15)),
    },
    "glassbox-purge-idempotency-records": {
        "task": "glassbox.tasks.purge_idempotency_records",
        "schedule": float(GLASSBOX_IDEMPOTENCY_PURGE_SECONDS),
    },
}

# --- explanations ------------------------------------------------------------
# A running chunk writes a heartbeat every HEARTBEAT seconds; one silent for
# STALE seconds is presumed dead and re-queued, at most MAX_ATTEMPTS runs per
# chunk. A pending chunk (or queued report) whose message was lost is sent
# again after LOST_MESSAGE seconds.
GLASSBOX_EXPLANATION_HEARTBEAT_SECONDS = _env_int("GLASSBOX_EXPLANATION_HEARTBEAT_SECONDS", 5)
GLASSBOX_EXPLANATION_STALE_SECONDS = _env_int("GLASSBOX_EXPLANATION_STALE_SECONDS", 60)
GLASSBOX_EXPLANATION_MAX_ATTEMPTS = _env_int("GLASSBOX_EXPLANATION_MAX_ATTEMPTS", 3)
GLASSBOX_EXPLANATION_LOST_MESSAGE_SECONDS = _env_int("GLASSBOX_EXPLANATION_LOST_MESSAGE_SECONDS", 1800)
# A report over more texts than this is refused (code report_too_large) with
# its time estimate and how to sample instead. At the 11-16 rows/s a
# BERT-base-sized model ran on two CPU cores (issue 11), 5,000 texts are about
# 6-9 hours of one worker with IG at 16 steps (71 rows a text with fidelity)
# and 2-3 days with SHAP at 500 evaluations (521 rows a text).
GLASSBOX_MAX_REPORT_TEXTS = _env_int("GLASSBOX_MAX_REPORT_TEXTS", 5000)

# --- inference: backend and device -------------------------------------------
# How transformers versions are run. torch: always torch. auto: each version is
# exported to ONNX at warm time and ONNX Runtime serves it where it agrees with
# torch (see registry/onnx_export.py); on a CUDA device auto keeps torch. onnx:
# like auto, and on CUDA too (ONNX Runtime's CUDA provider: requirements-gpu.txt).
# The test suite runs with torch (Makefile) except the backend's own tests.
GLASSBOX_INFERENCE_BACKEND = os.environ.get("GLASSBOX_INFERENCE_BACKEND", "auto").strip().lower()
if GLASSBOX_INFERENCE_BACKEND not in ("auto", "torch", "onnx"):
    raise ImproperlyConfigured("GLASSBOX_INFERENCE_BACKEND must be auto, torch or onnx")
# auto: CUDA when torch sees a GPU, else the CPU; cuda on a machine without one
# makes loading a model fail with that reason (a misconfigured GPU worker).
GLASSBOX_DEVICE = os.environ.get("GLASSBOX_DEVICE", "auto").strip().lower()
if GLASSBOX_DEVICE not in ("auto", "cpu", "cuda"):
    raise ImproperlyConfigured("GLASSBOX_DEVICE must be auto, cpu or cuda")
# ONNX serves only when every probability of the check texts is within this of torch's.
GLASSBOX_ONNX_TOLERANCE = float(os.environ.get("GLASSBOX_ONNX_TOLERANCE", "1e-4"))
# Exported graphs, by artifact digest.
ONNX_CACHE_DIR = Path(os.environ.get("ONNX_CACHE_DIR", DATA_DIR / "onnx-cache")).resolve()
# Explanation methods whose reports go to the `explanations-gpu` queue (e.g.
# "shap,ig"), served by workers started on GPU machines with
# `celery -A glassbox worker -Q explanations-gpu`. Empty: every report stays on
# `explanations`. Set it only where such workers run.
GLASSBOX_GPU_METHODS = _env_list("GLASSBOX_GPU_METHODS", [])

# --- serving, rollouts and monitoring ----------------------------------------
# Limits of one predict call.
GLASSBOX_PREDICT_MAX_INPUTS = _env_int("GLASSBOX_PREDICT_MAX_INPUTS", 64)
GLASSBOX_PREDICT_MAX_INPUT_CHARS = _env_int("GLASSBOX_PREDICT_MAX_INPUT_CHARS", 5000)
# Cross-request batching of transformers predictions in a serving process
# (rollouts/request_batching.py): calls arriving within BATCH_WAIT_MS of the
# first share one predict pass of at most BATCH_MAX rows; BATCH_MAX 1 turns it off.
GLASSBOX_BATCH_WAIT_MS = float(os.environ.get("GLASSBOX_BATCH_WAIT_MS", "5"))
GLASSBOX_BATCH_MAX = _env_int("GLASSBOX_BATCH_MAX", 64)
# Prediction logs are written in batches off the request path: at most every
# FLUSH seconds or BATCH rows, whichever comes first.
GLASSBOX_PREDICTION_LOG_FLUSH_SECONDS = float(os.environ.get("GLASSBOX_PREDICTION_LOG_FLUSH_SECONDS", "0.5"))
GLASSBOX_PREDICTION_LOG_BATCH = _env_int("GLASSBOX_PREDICTION_LOG_BATCH", 500)
# While the database is unreachable a process keeps at most this many rows to
# retry; past it the oldest are dropped (counted on /metrics, and logged).
GLASSBOX_PREDICTION_LOG_MAX_BUFFER = _env_int("GLASSBOX_PREDICTION_LOG_MAX_BUFFER", 200_000)
# How long a process that exits waits for its last rows to be written.
GLASSBOX_PREDICTION_LOG_EXIT_TIMEOUT = _env_int("GLASSBOX_PREDICTION_LOG_EXIT_TIMEOUT", 10)
# Shadow traffic: background threads per process calling the candidate, and
# how far they may fall behind (inputs) before mirrors are skipped.
GLASSBOX_SHADOW_WORKERS = _env_int("GLASSBOX_SHADOW_WORKERS", 1)
GLASSBOX_SHADOW_MAX_PENDING = _env_int("GLASSBOX_SHADOW_MAX_PENDING", 1000)
# A bearer token that lets a Prometheus scraper read /metrics without a user
# account (empty: only signed-in users who may read prediction logs).
GLASSBOX_METRICS_TOKEN = os.environ.get("GLASSBOX_METRICS_TOKEN", "")
# How often the beat task analyses active rollouts and checks monitored versions.
GLASSBOX_ROLLOUT_TICK_SECONDS = _env_int("GLASSBOX_ROLLOUT_TICK_SECONDS", 10)
GLASSBOX_MONITOR_INTERVAL_SECONDS = _env_int("GLASSBOX_MONITOR_INTERVAL_SECONDS", 300)
# After a promotion the old stable stays deployed (and loaded) this long for
# an instant rollback, then it is retired.
GLASSBOX_RETIRE_PREVIOUS_AFTER_SECONDS = _env_int("GLASSBOX_RETIRE_PREVIOUS_AFTER_SECONDS", 86400)
# Shortest analysis interval a rollout may ask for (tests lower it).
GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS = _env_int("GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS", 10)
# Rollout analysis (rollouts/tasks.py): finds rollouts whose interval is up
# and retires previous versions whose rollback time is over.
CELERY_BEAT_SCHEDULE["rollouts-analyse"] = {
    "task": "rollouts.tasks.analyse_rollouts",
    "schedule": float(GLASSBOX_ROLLOUT_TICK_SECONDS),
}
# Input drift thresholds (see rollouts/drift.py for where the defaults come from).
GLASSBOX_DRIFT_THRESHOLDS = {
    "character_js_distance": float(os.environ.get("GLASSBOX_DRIFT_CHARACTER_JS", "0.1")),
    "length_psi": float(os.environ.get("GLASSBOX_DRIFT_LENGTH_PSI", "0.2")),
    "unknown_rate_increase": float(os.environ.get("GLASSBOX_DRIFT_UNKNOWN_RATE", "0.05")),
}
# Bounds of the live monitor (rollouts.services.monitor_check): a deployed version's
# last GLASSBOX_MONITOR_INTERVAL_SECONDS of traffic outside them raises an
# alert, back inside clears it. Drift uses GLASSBOX_DRIFT_THRESHOLDS above.
GLASSBOX_MONITOR_THRESHOLDS = {
    # 5 %: Argo Rollouts' documented analysis example passes at a success rate >= 0.95.
    "max_error_rate": float(os.environ.get("GLASSBOX_MONITOR_MAX_ERROR_RATE", "0.05")),
    # A Glassbox choice: the demo models answer in milliseconds, so a p95 over
    # half a second means the serving path is in trouble, not a slow model.
    "max_latency_p95_ms": float(os.environ.get("GLASSBOX_MONITOR_MAX_LATENCY_P95_MS", "500")),
    # Live accuracy (from feedback) may fall at most this far below the
    # accuracy the version was approved with (its `metrics["accuracy"]`); a
    # Glassbox choice. Without a recorded accuracy, MIN_LIVE_ACCURACY applies
    # when set.
    "max_accuracy_drop": float(os.environ.get("GLASSBOX_MONITOR_MAX_ACCURACY_DROP", "0.1")),
    "min_live_accuracy": (
        float(os.environ["GLASSBOX_MONITOR_MIN_LIVE_ACCURACY"])
        if os.environ.get("GLASSBOX_MONITOR_MIN_LIVE_ACCURACY")
        else None
    ),
    # Below these counts a value is not judged: the rollout analysis' default
    # minimum of 20 requests; drift on fewer than 200 texts is mostly sampling noise.
    "min_requests": _env_int("GLASSBOX_MONITOR_MIN_REQUESTS", 20),
    "min_feedback": _env_int("GLASSBOX_MONITOR_MIN_FEEDBACK", 20),
    "min_drift_texts": _env_int("GLASSBOX_MONITOR_MIN_DRIFT_TEXTS", 200),
}
# Deep verification of the audit trail and the evidence it binds (digests of
# report results, dataset files and artifacts): daily by default.
CELERY_BEAT_SCHEDULE["audit-deep-verify"] = {
    "task": "governance.tasks.deep_verify",
    "schedule": float(_env_int("GLASSBOX_DEEP_VERIFY_INTERVAL_SECONDS", 86400)),
}
CELERY_BEAT_SCHEDULE["rollouts-check-monitors"] = {
    "task": "rollouts.tasks.check_monitors",
    "schedule": float(GLASSBOX_ROLLOUT_TICK_SECONDS),
}
# Feedback rows are audited as one summary per sender and model per this
# interval (rollouts.services.feedback_summarize), not one event per call.
GLASSBOX_FEEDBACK_SUMMARY_SECONDS = _env_int("GLASSBOX_FEEDBACK_SUMMARY_SECONDS", 60)
CELERY_BEAT_SCHEDULE["rollouts-summarize-feedback"] = {
    "task": "rollouts.tasks.summarize_feedback",
    "schedule": float(GLASSBOX_FEEDBACK_SUMMARY_SECONDS),
}


# --- how long prediction logs are kept (README "How long prediction data is kept") ---
# The EU AI Act (Art. 19) has providers of high-risk systems keep their logs
# at least six months: below this many days for `high` the platform refuses to start.
GLASSBOX_HIGH_RISK_MIN_RETENTION_DAYS = 183


def _retention_days(name: str, default: str) -> dict[str, int]:
    """ "high=400,medium=200,low=90": days per risk tier, each tier exactly
    once. Anything else stops the start with the reason (a typo must not
    silently keep data forever, or delete it too early)."""
    text = os.environ.get(name, default)
    tiers = ("high", "medium", "low")
    days: dict[str, int] = {}
    for item in text.split(","):
        tier, sep, value = (part.strip() for part in item.partition("="))
        if not sep or tier not in tiers:
            raise ImproperlyConfigured(f"{name}: {item.strip()!r} is not tier=days with a tier of {', '.join(tiers)}")
        if tier in days:
            raise ImproperlyConfigured(f"{name}: {tier} is given twice")
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            raise ImproperlyConfigured(f"{name}: {tier}={value!r} is not a whole number of days (1 or more)")
        days[tier] = int(value)
    missing = [tier for tier in tiers if tier not in days]
    if missing:
        raise ImproperlyConfigured(f"{name}: no value for {', '.join(missing)} (give all of {', '.join(tiers)})")
    if days["high"] < GLASSBOX_HIGH_RISK_MIN_RETENTION_DAYS:
        raise ImproperlyConfigured(
            f"{name}: high={days['high']} is below {GLASSBOX_HIGH_RISK_MIN_RETENTION_DAYS} days; the EU AI Act "
            "(Art. 19) requires the logs of a high-risk system to be kept at least six months"
        )
    return days


GLASSBOX_PREDICTION_RETENTION_DAYS = _retention_days("GLASSBOX_PREDICTION_RETENTION_DAYS", "high=400,medium=200,low=90")
# Expired rows are written to the artifact storage (gzip JSON lines, one file
# per model and day, SHA-256 in the audit trail) before they are deleted. On
# by default: a deletion cannot be undone, and a wrong tier or a mistyped
# number of days would otherwise destroy evidence without a trace. "off"
# deletes without a copy (data minimisation where no archive is wanted).
_archive = os.environ.get("GLASSBOX_PREDICTION_ARCHIVE", "on").strip().lower()
if _archive not in ("on", "off"):
    raise ImproperlyConfigured(f"GLASSBOX_PREDICTION_ARCHIVE must be on or off, not {_archive!r}")
GLASSBOX_PREDICTION_ARCHIVE = _archive == "on"
# Rows deleted per transaction, and a pause between two batches so that the
# prediction-log writers and the monitoring queries keep their share of the database.
GLASSBOX_PREDICTION_RETENTION_BATCH = _env_int("GLASSBOX_PREDICTION_RETENTION_BATCH", 5000)
GLASSBOX_PREDICTION_RETENTION_PAUSE_MS = _env_int("GLASSBOX_PREDICTION_RETENTION_PAUSE_MS", 0)
# Hourly: cheap when nothing expired (one index probe per model); a failed or
# killed run is picked up within the hour, and days expire a day at a time.
GLASSBOX_PREDICTION_RETENTION_SECONDS = _env_int("GLASSBOX_PREDICTION_RETENTION_SECONDS", 3600)
CELERY_BEAT_SCHEDULE["rollouts-prediction-retention"] = {
    "task": "rollouts.tasks.apply_prediction_retention",
    "schedule": float(GLASSBOX_PREDICTION_RETENTION_SECONDS),
}

# --- notifications and webhooks ------------------------------------------------
# E-mail goes through Django's backend: SMTP when EMAIL_HOST is set, else the
# console (the demo prints each message in the worker's output).
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = _env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = _env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Glassbox <glassbox@localhost>")
# Where links in e-mails point (the address people open the platform at).
GLASSBOX_BASE_URL = os.environ.get("GLASSBOX_BASE_URL", "http://localhost:8000").rstrip("/")
# Sending an e-mail: attempts in all, the first retry after BACKOFF seconds, doubling.
GLASSBOX_NOTIFICATION_MAX_ATTEMPTS = _env_int("GLASSBOX_NOTIFICATION_MAX_ATTEMPTS", 5)
GLASSBOX_NOTIFICATION_BACKOFF_SECONDS = float(os.environ.get("GLASSBOX_NOTIFICATION_BACKOFF_SECONDS", "30"))
# Owners hear of a re-certification this many days before it is due (daily beat task).
GLASSBOX_RECERTIFICATION_NOTICE_DAYS = _env_int("GLASSBOX_RECERTIFICATION_NOTICE_DAYS", 14)
CELERY_BEAT_SCHEDULE["notifications-recertification-due"] = {
    "task": "notifications.tasks.notify_recertifications_due",
    "schedule": float(_env_int("GLASSBOX_RECERTIFICATION_CHECK_SECONDS", 86400)),
}
# Webhook deliveries: attempts in all; the first retry after BACKOFF seconds, doubling each time.
GLASSBOX_WEBHOOK_MAX_ATTEMPTS = _env_int("GLASSBOX_WEBHOOK_MAX_ATTEMPTS", 6)
GLASSBOX_WEBHOOK_BACKOFF_SECONDS = float(os.environ.get("GLASSBOX_WEBHOOK_BACKOFF_SECONDS", "10"))
# One attempt: seconds to connect, and to get the whole answer; bytes of answer read at most.
GLASSBOX_WEBHOOK_CONNECT_TIMEOUT = float(os.environ.get("GLASSBOX_WEBHOOK_CONNECT_TIMEOUT", "5"))
GLASSBOX_WEBHOOK_TIMEOUT = float(os.environ.get("GLASSBOX_WEBHOOK_TIMEOUT", "10"))
GLASSBOX_WEBHOOK_MAX_RESPONSE_BYTES = _env_int("GLASSBOX_WEBHOOK_MAX_RESPONSE_BYTES", 64 * 1024)
# Targets on private, loopback or link-local addresses are refused (SSRF)
# unless this is set: for a receiver inside your own network, and the tests.
# Cloud metadata addresses stay refused even then.
GLASSBOX_WEBHOOK_ALLOW_PRIVATE = _env_bool("GLASSBOX_WEBHOOK_ALLOW_PRIVATE", False)

# --- audit -------------------------------------------------------------------
# The key that signs audit checkpoints lives outside the database.
AUDIT_CHECKPOINT_KEY = os.environ.get("AUDIT_CHECKPOINT_KEY", "")

# --- review policy -----------------------------------------------------------
# Per risk tier: approvals from distinct reviewers, explanation methods that
# must have a succeeded report for the version before anyone may approve it,
# how many days an approval holds before re-certification is due, and whether
# a re-certification round needs fresh evidence (reports finished after the
# approval it renews; see README "Re-certification").
GLASSBOX_APPROVAL_POLICY = {
    "low": {"approvals": 1, "evidence": [], "recertify_days": 365, "recertify_fresh_evidence": False},
    "medium": {"approvals": 2, "evidence": [], "recertify_days": 180, "recertify_fresh_evidence": False},
    "high": {
        "approvals": 2,
        "evidence": _env_list("GLASSBOX_HIGH_RISK_EVIDENCE", ["shap", "pfi"]),
        "recertify_days": 90,
        "recertify_fresh_evidence": True,
        # An approver must have opened the required reports before approving.
        "require_opened_evidence": _env_bool("GLASSBOX_HIGH_RISK_REQUIRE_OPENED_EVIDENCE", True),
        # True: at least one approver must belong to no team (validation
        # independent of every development team, not only the owning one).
        "require_independent_approver": _env_bool("GLASSBOX_HIGH_RISK_INDEPENDENT_APPROVER", False),
    },
}
# How often the beat task looks for deployed versions whose certification
# lapsed or was refused, and raises their alerts (idempotent; hourly is plenty
# for a date, and a restart never waits a day for its first look).
GLASSBOX_CERTIFICATION_CHECK_SECONDS = _env_int("GLASSBOX_CERTIFICATION_CHECK_SECONDS", 3600)
CELERY_BEAT_SCHEDULE["rollouts-check-certifications"] = {
    "task": "rollouts.tasks.check_certifications",
    "schedule": float(GLASSBOX_CERTIFICATION_CHECK_SECONDS),
}

# --- security ----------------------------------------------------------------
# How many reverse proxies in front of the app append to X-Forwarded-For.
# 0: the header is ignored (anyone can write it) and the peer address is the
# client's; N: the client is the address N entries from the right of it.
GLASSBOX_TRUSTED_PROXIES = _env_int("GLASSBOX_TRUSTED_PROXIES", 0)
if GLASSBOX_TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured("GLASSBOX_TRUSTED_PROXIES must be 0 or more")
# Sign-in budget (login page and token API), in fixed windows: failed
# attempts per (username, client address) and per client address, and a much
# higher ceiling per username alone (see governance/signin.py for why).
GLASSBOX_SIGNIN_MAX_FAILURES = _env_int("GLASSBOX_SIGNIN_MAX_FAILURES", 10)
GLASSBOX_SIGNIN_MAX_FAILURES_PER_ADDRESS = _env_int("GLASSBOX_SIGNIN_MAX_FAILURES_PER_ADDRESS", 30)
GLASSBOX_SIGNIN_MAX_FAILURES_PER_USERNAME = _env_int("GLASSBOX_SIGNIN_MAX_FAILURES_PER_USERNAME", 100)
GLASSBOX_SIGNIN_WINDOW_SECONDS = _env_int("GLASSBOX_SIGNIN_WINDOW_SECONDS", 900)
# The cache holds those counters: set CACHE_URL (redis://...) when several
# server processes must share them; the default is per process.
if os.environ.get("CACHE_URL"):
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["CACHE_URL"]}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "glassbox"}}
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = _env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = _env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # Load balancers probe the app's own port over plain HTTP: the probes answer there.
    SECURE_REDIRECT_EXEMPT = [r"^livez$", r"^readyz$", r"^healthz$"]
    # gunicorn serves the static files itself (no file server to run beside it):
    # whitenoise, right after the security middleware, from collectstatic's
    # gzipped copies. Not the manifest (hashed names) storage: every page would
    # fail with a 500 in a process started before collectstatic ran.
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
        "whitenoise.middleware.WhiteNoiseMiddleware",
    )
    STORAGES["staticfiles"] = {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("GLASSBOX_LOG_LEVEL", "INFO")},
}
