"""Platform endpoints that belong to no domain app: the start page and the
health probes that load balancers and orchestrators call."""

import json
import threading
import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe


@require_safe
def home(request):
    return redirect("registry:model-list")


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_broker() -> str:
    from kombu import Connection

    broker = Connection(settings.CELERY_BROKER_URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    with broker:
        broker.ensure_connection(max_retries=1, timeout=2)
    return "ok"


# The last look at the artifact store, per storage configuration: a load
# balancer polling every second must not become a HEAD request per poll.
_storage_checked: dict[str, tuple[float, str]] = {}
_storage_lock = threading.Lock()


def _check_storage() -> str:
    """The artifact store answers: the bucket exists and our credentials may
    read it (S3), or the folder is writable. Remembered for
    GLASSBOX_STORAGE_CHECK_SECONDS, failures included."""
    from glassbox.errors import StorageUnavailable
    from registry.artifacts import check_artifact_storage

    config = json.dumps(settings.STORAGES["artifacts"], sort_keys=True, default=str)
    with _storage_lock:
        cached = _storage_checked.get(config)
    if cached is None or time.monotonic() - cached[0] >= settings.GLASSBOX_STORAGE_CHECK_SECONDS:
        try:
            check_artifact_storage()
            outcome = "ok"
        except StorageUnavailable as exc:
            # The reason code only (no_such_bucket, access_denied, unreachable): the probe is public.
            outcome = f"error: {exc.extra.get('reason', 'error')}"
        with _storage_lock:
            _storage_checked[config] = cached = (time.monotonic(), outcome)
    if cached[1] != "ok":
        raise RuntimeError(cached[1])
    return cached[1]


@never_cache
@require_GET
def livez(request):
    """Liveness: the process answers. Touches no dependency, so an outage of
    the database or broker never gets a healthy web process restarted."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    """Readiness: 200 when the database, the broker and the artifact store
    answer, 503 naming the failing part otherwise (take the process out of
    the load balancer)."""
    checks = {}
    healthy = True
    for name, check in (("database", _check_database), ("broker", _check_broker), ("storage", _check_storage)):
        try:
            checks[name] = check()
        except RuntimeError as exc:  # the storage check's own verdict, with its reason code
            checks[name] = str(exc)
            healthy = False
        except Exception as exc:  # any failure of a dependency is "down", with its reason
            checks[name] = f"error: {type(exc).__name__}"
            healthy = False
    return JsonResponse({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)
