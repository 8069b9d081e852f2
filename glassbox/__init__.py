# The Celery app is imported here so that `@shared_task` binds to it whenever
# Django starts (web process, worker and tests alike).
from glassbox.celery import app as celery_app

__all__ = ("celery_app",)
