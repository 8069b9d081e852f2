"""Shadow traffic: while a rollout shadows, inputs the stable version
answered are mirrored to the candidate by a small background pool per
process. Its answers are logged (shadow=True, route "shadow", mirror_of =
the live prediction) and never returned. When the pool is behind by more
than GLASSBOX_SHADOW_MAX_PENDING inputs, mirrors are skipped (and counted
in `shadow_skipped`, on /metrics): shadow traffic is a sample, never a cost
to live traffic.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.utils import timezone

from rollouts import prediction_log
from rollouts.routing import RoutingTable

logger = logging.getLogger(__name__)

_shadow_pool: ThreadPoolExecutor | None = None
_shadow_pid: int | None = None
_shadow_lock = threading.Lock()
_shadow_pending = 0
shadow_skipped = 0


def _pool() -> ThreadPoolExecutor:
    global _shadow_pool, _shadow_pid, _shadow_pending
    if _shadow_pool is None or _shadow_pid != os.getpid():
        with _shadow_lock:
            if _shadow_pool is None or _shadow_pid != os.getpid():
                # Per process: a forked worker does not inherit the parent's threads.
                _shadow_pool = ThreadPoolExecutor(
                    max_workers=settings.GLASSBOX_SHADOW_WORKERS, thread_name_prefix="shadow"
                )
                _shadow_pid, _shadow_pending = os.getpid(), 0
    return _shadow_pool


def shadow_mirror(table: RoutingTable, mirrored: list[tuple[str, uuid.UUID]], *, key_digest: str) -> bool:
    """Queue a copy of live inputs for the candidate; False when skipped."""
    global _shadow_pending, shadow_skipped
    pool = _pool()
    with _shadow_lock:
        if _shadow_pending + len(mirrored) > settings.GLASSBOX_SHADOW_MAX_PENDING:
            shadow_skipped += len(mirrored)
            return False
        _shadow_pending += len(mirrored)
    pool.submit(_shadow_answer, table, mirrored, key_digest)
    return True


def _shadow_answer(table: RoutingTable, mirrored: list[tuple[str, uuid.UUID]], key_digest: str) -> None:
    from rollouts.serving import answer_of, run_model, short_error

    global _shadow_pending
    candidate = table.candidate
    now = timezone.now()
    entries = []
    try:
        texts = [text for text, _ in mirrored]
        try:
            labels, probabilities, latency_ms = run_model(candidate, texts)
            answers = [(*answer_of(row, labels)[:2], "") for row in probabilities]
        except Exception as exc:
            latency_ms = 0.0
            answers = [("", None, short_error(exc))] * len(texts)
        for (text, live_id), (label, confidence, error) in zip(mirrored, answers):
            entries.append(
                prediction_log.new_entry(
                    model_id=table.model.pk,
                    version_id=candidate.pk,
                    rollout_id=table.rollout_id,
                    route="shadow",
                    text=text,
                    key_digest=key_digest,
                    label=label,
                    confidence=confidence,
                    latency_ms=latency_ms,
                    created_at=now,
                    error=error,
                    shadow=True,
                    mirror_of=live_id,
                    redact_input=table.model.redact_inputs,
                )
            )
        prediction_log.enqueue(entries)
    except Exception:
        logger.exception("shadow prediction for %s failed", candidate)
    finally:
        with _shadow_lock:
            _shadow_pending -= len(mirrored)


def wait_for_shadow(timeout: float = 10.0) -> bool:
    """Wait until every queued mirror has been answered (tests, benchmarks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _shadow_lock:
            if _shadow_pending <= 0:
                return True
        time.sleep(0.01)
    return False
