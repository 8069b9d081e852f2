"""The prediction log writer: predictions are queued in memory on the request
path and written by a daemon thread in batches (one transaction per batch:
the rows plus their PredictionCounter totals and their per-minute
PredictionAggregate sums, rollouts/aggregation.py), every
GLASSBOX_PREDICTION_LOG_FLUSH_SECONDS or GLASSBOX_PREDICTION_LOG_BATCH rows.

What it promises:
- a request never waits for the database: `enqueue` is a lock-free append;
- a batch is written whole or not at all, and counters move with their rows;
- a database outage loses nothing while it lasts up to
  GLASSBOX_PREDICTION_LOG_MAX_BUFFER rows: the batch is kept and retried with
  backoff (0.5 s doubling to 30 s). Beyond that bound the oldest rows are
  dropped, counted (`dropped_count`, /metrics) and logged - memory must not
  grow without limit while the database is gone;
- the queue is flushed at interpreter exit (atexit), which is also how a
  gunicorn worker ends (it leaves through sys.exit), and by
  `flush_prediction_logs()` for tests and analysis.

The writer is per process: after a fork (gunicorn workers) the child starts
its own thread on first use and never inherits the parent's queue.
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import logging
import os
import threading
import time
import uuid
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection, transaction

from rollouts.redaction import redact

logger = logging.getLogger(__name__)

# Upper bounds (ms) of the latency histogram buckets, cumulative as Prometheus
# wants them. Fixed forever once counters exist: changing them would mix
# incompatible bucket sets in the stored totals.
LATENCY_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
INPUT_TEXT_LIMIT = 1000
_RETRY_FIRST_SECONDS = 0.5
_RETRY_MAX_SECONDS = 30.0


def bucket_label(bound: float) -> str:
    return f"{bound:g}"


BUCKET_LABELS = tuple(bucket_label(b) for b in LATENCY_BUCKETS_MS) + ("+Inf",)


def key_hash(key: str | None) -> str:
    """A short keyed hash of the routing key: equal keys stay recognisable
    in the log, but the key itself (often a user id) is not stored."""
    if key is None:
        return ""
    secret = settings.SECRET_KEY.encode()[:64]
    return hashlib.blake2b(key.encode(), digest_size=8, key=secret).hexdigest()


def new_entry(
    *,
    model_id: int,
    version_id: int,
    rollout_id: int | None,
    route: str,
    text: str,
    key_digest: str,
    label: str,
    confidence: float | None,
    latency_ms: float,
    created_at: datetime,
    error: str = "",
    shadow: bool = False,
    mirror_of: uuid.UUID | None = None,
    prediction_id: uuid.UUID | None = None,
    redact_input: bool = True,
) -> dict:
    """One row to be logged, as a plain dict (cheap on the request path).

    The stored text is redacted (rollouts/redaction.py) unless the model's
    admin opted out (`RegisteredModel.redact_inputs`); the model itself was
    given the raw text. Redacted before it is cut to INPUT_TEXT_LIMIT, so a
    number across the cut cannot leave its first digits behind, and before
    it is queued, so raw text never waits in the buffer. `input_length`
    stays the raw length: it is what the model read (and what latency
    depends on), and it identifies no one."""
    stored = redact(text) if redact_input else text
    return {
        "prediction_id": prediction_id or uuid.uuid4(),
        "model_id": model_id,
        "version_id": version_id,
        "rollout_id": rollout_id,
        "shadow": shadow,
        "mirror_of": mirror_of,
        "route": route,
        "key_hash": key_digest,
        "input_text": stored[:INPUT_TEXT_LIMIT],
        "input_length": len(text),
        "label": label[:200],
        "confidence": confidence,
        "latency_ms": latency_ms,
        "error": error[:500],
        "created_at": created_at,
    }


class PredictionLogWriter:
    def __init__(self, *, flush_seconds: float, batch_size: int, max_buffer: int):
        self.flush_seconds = flush_seconds
        self.batch_size = max(1, batch_size)
        self.max_buffer = max(self.batch_size, max_buffer)
        self.pid = os.getpid()
        # deque.append/popleft are atomic: the request path takes no lock.
        self._queue: collections.deque[dict] = collections.deque()
        # Rows taken off the queue whose write has not succeeded yet.
        self._pending: list[dict] = []
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._retry_delay = 0.0
        # flush_seconds <= 0: no background thread, rows are written only by
        # flush() and at exit (tests whose rows must land in their own transaction).
        self.background = flush_seconds > 0
        if self.background:
            threading.Thread(target=self._run, name="prediction-log-writer", daemon=True).start()

    # --- request path -------------------------------------------------------------
    def enqueue(self, entries: list[dict]) -> None:
        self._queue.extend(entries)
        if self.background and len(self._queue) >= self.batch_size:
            self._wake.set()

    @property
    def buffered(self) -> int:
        return len(self._queue) + len(self._pending)

    # --- writer thread -------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._retry_delay or self.flush_seconds)
            self._wake.clear()
            try:
                self.flush_once()
            except Exception:  # the thread must survive anything; flush_once logs
                logger.exception("prediction log writer: unexpected error")
            finally:
                # Each batch opens (or reuses) this thread's connection; drop it when broken.
                close_old_connections()

    def flush_once(self) -> int:
        """Write what is queued now, batch by batch. Returns the rows written;
        on a database error keeps them and schedules a retry."""
        written = 0
        with self._write_lock:
            while True:
                self._trim_to_bound()
                while self._queue and len(self._pending) < self.batch_size:
                    self._pending.append(self._queue.popleft())
                if not self._pending:
                    self._retry_delay = 0.0
                    return written
                try:
                    _write_batch(self._pending)
                except (OperationalError, InterfaceError) as exc:
                    # The database is away (restart, failover, network): keep the
                    # batch, back off, and try again with a new connection.
                    self.failures += 1
                    self._retry_delay = min(_RETRY_MAX_SECONDS, max(_RETRY_FIRST_SECONDS, self._retry_delay * 2))
                    logger.warning(
                        "prediction log: writing %d rows failed (%s); %d buffered, retrying in %.1f s",
                        len(self._pending),
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                        self.buffered,
                        self._retry_delay,
                    )
                    _discard_connection()
                    return written
                except DatabaseError:
                    # Not an outage but a row the database refuses: write the good rows one
                    # by one so a single bad row cannot block the log forever.
                    self.failures += 1
                    _discard_connection()
                    written += self._write_one_by_one()
                    continue
                written += len(self._pending)
                self.written += len(self._pending)
                self._pending = []
                self._retry_delay = 0.0

    def _write_one_by_one(self) -> int:
        written = 0
        for entry in self._pending:
            try:
                _write_batch([entry])
                written += 1
            except (OperationalError, InterfaceError):
                raise
            except DatabaseError:
                self.dropped += 1
                _discard_connection()
                logger.error("prediction log: dropped prediction %s the database refused", entry["prediction_id"])
        self.written += written
        self._pending = []
        return written

    def _trim_to_bound(self) -> None:
        excess = self.buffered - self.max_buffer
        if excess <= 0:
            return
        # Last resort during a long outage: drop the oldest queued rows rather
        # than let the process run out of memory. Counted and said out loud.
        for _ in range(excess):
            if self._pending:
                self._pending.pop(0)
            elif self._queue:
                self._queue.popleft()
        self.dropped += excess
        logger.error(
            "prediction log: buffer over %d rows, dropped the %d oldest (%d dropped so far)",
            self.max_buffer,
            excess,
            self.dropped,
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued now; True when nothing is left."""
        deadline = time.monotonic() + timeout
        while True:
            self.flush_once()
            if not self.buffered:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def stop(self, timeout: float = 10.0) -> bool:
        self._stopped = True
        self._wake.set()
        return self.flush(timeout=timeout)


def _discard_connection() -> None:
    try:
        connection.close()
    except Exception:  # closing a dead connection may itself raise
        pass


def _write_batch(entries: list[dict]) -> None:
    from rollouts.aggregation import apply_tallies, tallies_of_entries
    from rollouts.models import PredictionCounter, PredictionLog

    totals: dict[tuple[int, str], dict] = {}
    for entry in entries:
        total = totals.setdefault(
            (entry["version_id"], entry["route"]),
            {"requests": 0, "errors": 0, "latency_ms_sum": 0.0, "buckets": [0] * len(BUCKET_LABELS)},
        )
        total["requests"] += 1
        total["errors"] += 1 if entry["error"] else 0
        total["latency_ms_sum"] += entry["latency_ms"]
        for index, bound in enumerate(LATENCY_BUCKETS_MS):
            if entry["latency_ms"] <= bound:
                total["buckets"][index] += 1
        total["buckets"][-1] += 1  # +Inf counts everything
    with transaction.atomic():
        PredictionLog.objects.bulk_create([PredictionLog(**entry) for entry in entries])
        PredictionCounter.objects.bulk_create(
            [PredictionCounter(version_id=v, route=r) for v, r in totals], ignore_conflicts=True
        )
        # Locked in a fixed order so two writers (two gunicorn workers) cannot deadlock.
        for (version_id, route), total in sorted(totals.items()):
            counter = PredictionCounter.objects.select_for_update().get(version_id=version_id, route=route)
            counter.requests += total["requests"]
            counter.errors += total["errors"]
            counter.latency_ms_sum += total["latency_ms_sum"]
            buckets = dict(counter.latency_buckets or {})
            for label, count in zip(BUCKET_LABELS, total["buckets"]):
                buckets[label] = buckets.get(label, 0) + count
            counter.latency_buckets = buckets
            counter.save(update_fields=["requests", "errors", "latency_ms_sum", "latency_buckets"])
        # The per-minute and per-half-hour sums monitoring reads, in the same
        # transaction: a batch that rolls back takes them with it.
        apply_tallies(tallies_of_entries(entries))


_writer: PredictionLogWriter | None = None
_writer_lock = threading.Lock()


def writer() -> PredictionLogWriter:
    global _writer
    current = _writer
    if current is not None and current.pid == os.getpid():
        return current
    with _writer_lock:
        if _writer is None or _writer.pid != os.getpid():
            # A forked child gets a fresh writer: the parent's thread did not
            # survive the fork, and its queued rows are the parent's to write.
            _writer = PredictionLogWriter(
                flush_seconds=settings.GLASSBOX_PREDICTION_LOG_FLUSH_SECONDS,
                batch_size=settings.GLASSBOX_PREDICTION_LOG_BATCH,
                max_buffer=settings.GLASSBOX_PREDICTION_LOG_MAX_BUFFER,
            )
        return _writer


def reset_writer(timeout: float = 10.0) -> None:
    """Flush and stop this process's writer; the next enqueue starts a new
    one with the settings of that moment (tests switch modes with it)."""
    global _writer
    with _writer_lock:
        current, _writer = _writer, None
    if current is not None and current.pid == os.getpid():
        current.stop(timeout=timeout)


def enqueue(entries: list[dict]) -> None:
    writer().enqueue(entries)


def flush_prediction_logs(timeout: float = 10.0) -> bool:
    """Write every prediction this process has buffered, now. True when the
    buffer is empty afterwards (False: the database did not take them in time)."""
    current = _writer
    if current is None or current.pid != os.getpid():
        return True
    return current.flush(timeout=timeout)


def writer_stats() -> dict:
    current = _writer
    if current is None or current.pid != os.getpid():
        return {"buffered": 0, "written": 0, "dropped": 0, "failures": 0}
    return {
        "buffered": current.buffered,
        "written": current.written,
        "dropped": current.dropped,
        "failures": current.failures,
    }


@atexit.register
def _flush_at_exit() -> None:
    current = _writer
    if current is None or current.pid != os.getpid():
        return
    try:
        if not current.stop(timeout=float(settings.GLASSBOX_PREDICTION_LOG_EXIT_TIMEOUT)):
            logger.error("prediction log: %d rows could not be written before exit", current.buffered)
    except Exception:
        logger.exception("prediction log: flush at exit failed")
