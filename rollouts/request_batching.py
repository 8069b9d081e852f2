"""Cross-request batching: concurrent predict calls share forward passes.

A transformers forward pass costs nearly as much for one row as for a
dozen, so a serving process that answers concurrent callers one at a time
wastes most of the machine. Each loaded transformers predictor gets a
collector thread in each serving process. A caller hands its texts to the
collector and waits; the collector takes the first waiting call, keeps
gathering calls that arrive within GLASSBOX_BATCH_WAIT_MS (up to
GLASSBOX_BATCH_MAX rows) while other callers are in flight (a lone caller
never waits), runs them as one predict_proba (which still cuts
the rows into token-budget batches, registry/batching.py) and hands each
caller its own rows back. Calls that arrive while a pass runs form the next
batch, so under load batches fill without any waiting (what Triton calls
dynamic batching and TF Serving a batch timeout).

One bad input fails only its own call: when a shared pass raises, each of
its calls is run again on its own, and only the calls that still raise get
the error.

The collector is started on first use in each process (never before a
fork) and exits after BATCHER_IDLE_SECONDS without calls, so a predictor
evicted from the cache is not kept alive by its collector.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref

from django.conf import settings

logger = logging.getLogger(__name__)

BATCHER_IDLE_SECONDS = 30.0


class _Call:
    __slots__ = ("texts", "done", "result", "error")

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None


class CrossRequestBatcher:
    """Answers predict_proba for many threads with shared forward passes."""

    def __init__(self, predictor, *, max_rows: int, wait_seconds: float):
        # Weak: a predictor evicted from the cache must not live on here. While a
        # call waits, its caller holds the predictor, so a pass always finds it.
        self._predictor = weakref.ref(predictor)
        self.max_rows = max(1, int(max_rows))
        self.wait_seconds = max(0.0, float(wait_seconds))
        self._calls: queue.Queue[_Call] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        # Callers between handing in their texts and getting them back.
        self._in_flight = 0
        # What the passes looked like, for tests and the serving benchmark.
        self.passes = 0
        self.rows = 0

    def predict_proba(self, texts: list[str]):
        call = _Call(list(texts))
        with self._lock:
            self._in_flight += 1
        try:
            self._calls.put(call)
            self._ensure_collector()
            call.done.wait()
        finally:
            with self._lock:
                self._in_flight -= 1
        if call.error is not None:
            raise call.error
        return call.result

    def _ensure_collector(self) -> None:
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive() and self._pid == os.getpid()
            if not alive:
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._collect, name="glassbox-batcher", daemon=True)
                self._thread.start()

    def _collect(self) -> None:
        while True:
            try:
                first = self._calls.get(timeout=BATCHER_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    # A call queued just now finds no collector and starts one.
                    if self._calls.empty():
                        self._thread = None
                        return
                continue
            self._run(self._gather(first))

    def _gather(self, first: _Call) -> list[_Call]:
        batch, rows = [first], len(first.texts)
        deadline = time.monotonic() + self.wait_seconds
        while rows < self.max_rows:
            if self._in_flight <= len(batch) and self._calls.empty():
                break  # nobody else is calling: a lone caller never waits
            remaining = deadline - time.monotonic()
            try:
                call = self._calls.get(timeout=remaining) if remaining > 0 else self._calls.get_nowait()
            except queue.Empty:
                break
            if rows + len(call.texts) > self.max_rows:
                self._run(batch)  # this call starts the next batch
                batch, rows = [], 0
                deadline = time.monotonic() + self.wait_seconds
            batch.append(call)
            rows += len(call.texts)
        return batch

    def _run(self, calls: list[_Call]) -> None:
        texts = [text for call in calls for text in call.texts]
        self.passes += 1
        self.rows += len(texts)
        try:
            probabilities = self._predictor().predict_proba(texts)
        except BaseException as exc:
            if len(calls) == 1:
                self._finish(calls[0], error=exc)
                return
            # Whose input broke the pass? Each call again on its own.
            for call in calls:
                self._run([call])
            return
        start = 0
        for call in calls:
            self._finish(call, result=probabilities[start : start + len(call.texts)])
            start += len(call.texts)

    @staticmethod
    def _finish(call: _Call, *, result=None, error: BaseException | None = None) -> None:
        call.result, call.error = result, error
        call.done.set()


_batchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_batchers_lock = threading.Lock()


def batched(predictor):
    """The cross-request batcher of a loaded predictor in this process
    (GLASSBOX_BATCH_MAX 1 or less: the predictor itself, no batching)."""
    max_rows = settings.GLASSBOX_BATCH_MAX
    if max_rows <= 1:
        return predictor
    wait_seconds = settings.GLASSBOX_BATCH_WAIT_MS / 1000.0
    with _batchers_lock:
        batcher = _batchers.get(predictor)
        if batcher is None or (batcher.max_rows, batcher.wait_seconds) != (max_rows, wait_seconds):
            batcher = _batchers[predictor] = CrossRequestBatcher(
                predictor, max_rows=max_rows, wait_seconds=wait_seconds
            )
        return batcher
