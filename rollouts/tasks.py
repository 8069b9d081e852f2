"""Rollout and monitoring jobs for the workers: thin, idempotent, keyed by
primary key, run periodically by celery beat (see CELERY_BEAT_SCHEDULE)."""

import logging

from celery import shared_task  # noqa: F401  (used by the sections below)

logger = logging.getLogger(__name__)

# --- rollout analysis (rollouts/analysis.py) -----------------------------------

# --- monitoring and alerts (rollouts/monitoring.py) ----------------------------
