import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")

app = Celery("glassbox")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _refuse_to_start_without_storage(**kwargs):
    """A worker that cannot reach the artifact store (no bucket, credentials
    refused, unreachable) would fail every job it takes: it refuses to start,
    saying why, instead of being discovered on the first report."""
    import django

    django.setup()
    from glassbox.errors import StorageUnavailable
    from registry.artifacts import check_artifact_storage

    try:
        check_artifact_storage()
    except StorageUnavailable as exc:
        raise SystemExit(f"glassbox: the worker cannot start: {exc.message} ({exc.extra.get('reason')})") from exc
