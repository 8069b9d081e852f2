"""Serving predictions of a model (the data plane) and taking feedback on them.

Decisions, so callers know what to expect:
- Routing: with a `key`, every input of the call shares the key, so one call
  is answered by one version (sticky per key). Without a key, each input is
  routed at random by the candidate's weight on its own.
- Each version's inputs go to its predictor in one batch call; the latency
  logged for an input is the duration of its batch.
- Errors: a candidate that raises has its inputs logged as errors (the
  analysis counts them and aborts it) and answered by the stable version
  instead, so a broken canary costs its users nothing. When the stable (or a
  pinned) version raises, the call answers 503 with a `detail`, and every
  input is logged with the error text.
- Shadow: while the rollout shadows, inputs answered by the stable version are
  mirrored to the candidate by a small background pool; its answers are
  logged (shadow=True, route "shadow", mirror_of = the live prediction) and
  never returned. When that pool is behind by more than
  GLASSBOX_SHADOW_MAX_PENDING inputs, mirrors are skipped (and counted):
  shadow traffic is a sample, never a cost to live traffic.
- No audit event per prediction: PredictionLog is the record of the data
  plane. Refused calls for lack of permission are audited; feedback (ground
  truth a person asserts) is audited per call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from glassbox.errors import Conflict, GlassboxError, InvalidInput, NotFound, NotPermitted, TooLarge
from governance.audit import record_event, record_refusal
from registry.models import ModelVersion, RegisteredModel
from rollouts import prediction_log
from rollouts.routing import RoutingTable, routing_table

logger = logging.getLogger(__name__)

KEY_MAX_CHARS = 200
FEEDBACK_MAX_ITEMS = 1000
PIN_STATUSES = (ModelVersion.Status.DEPLOYED, ModelVersion.Status.APPROVED)


class ModelUnavailable(GlassboxError):
    """The version that must answer failed; the client may retry."""

    status_code = 503


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


# The predict path asks for permissions on every call; the answer is kept a
# second per user in this process (a revoked role stops serving within it),
# which spares two queries per request.
PERMISSION_TTL_SECONDS = 1.0
_permissions: dict[int, tuple[float, frozenset[str] | None]] = {}


def has_serving_perm(actor, perm: str) -> bool:
    if actor is None or not actor.is_authenticated or not actor.is_active:
        return False
    now = time.monotonic()
    hit = _permissions.get(actor.pk)
    if hit is None or now - hit[0] >= PERMISSION_TTL_SECONDS:
        # None stands for "everything" (an active superuser).
        hit = (now, None if actor.is_superuser else frozenset(actor.get_all_permissions()))
        _permissions[actor.pk] = hit
    return hit[1] is None or perm in hit[1]


def clear_permission_cache() -> None:
    _permissions.clear()


def require_serving_permission(actor, model_name: str = "") -> None:
    if not has_serving_perm(actor, "rollouts.serve_prediction"):
        message = "You have no role that may request predictions."
        record_refusal(
            actor=actor,
            action="prediction.request",
            reason=message,
            object_type="registry.registeredmodel",
            model_name=model_name,
        )
        raise NotPermitted(message)


def _checked_inputs(inputs) -> list[str]:
    if not isinstance(inputs, list):
        raise InvalidInput("inputs must be a list of texts.")
    if not inputs:
        raise InvalidInput("inputs is empty: send at least one text.")
    limit = settings.GLASSBOX_PREDICT_MAX_INPUTS
    if len(inputs) > limit:
        raise TooLarge(f"At most {limit} inputs per call ({len(inputs)} sent).")
    max_chars = settings.GLASSBOX_PREDICT_MAX_INPUT_CHARS
    for index, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InvalidInput(f"inputs[{index}] must be a text, not {type(text).__name__}.")
        if not text.strip():
            raise InvalidInput(f"inputs[{index}] is empty.")
        if len(text) > max_chars:
            raise TooLarge(f"inputs[{index}] has {len(text)} characters; at most {max_chars} are allowed.")
    return inputs


def _checked_key(key) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise InvalidInput("key must be a non-empty text when given.")
    if len(key) > KEY_MAX_CHARS:
        raise InvalidInput(f"key is at most {KEY_MAX_CHARS} characters.")
    return key


def _pinned_version(actor, model: RegisteredModel, number: int) -> ModelVersion:
    if not has_serving_perm(actor, "rollouts.pin_version"):
        message = "You have no role that may pin the version that answers."
        record_refusal(actor=actor, action="prediction.pin", reason=message, obj=model, detail={"version": number})
        raise NotPermitted(message)
    version = ModelVersion.objects.select_related("model").filter(model_id=model.pk, number=number).first()
    if version is None:
        raise NotFound(f"{model.name} has no version {number}.")
    if version.status not in PIN_STATUSES:
        raise Conflict(
            f"{version} is {version.status}; only a deployed or approved version can be pinned.",
            current_status=version.status,
        )
    return version


def _assign(table: RoutingTable, count: int, key: str | None) -> list[tuple[ModelVersion, str]]:
    if key is not None:
        return [table.choose(key)] * count
    return [table.choose(None) for _ in range(count)]


def _answer(version: ModelVersion, row, labels: list[str]) -> tuple[str, float, dict]:
    best = int(row.argmax())
    return labels[best], float(row[best]), {label: float(p) for label, p in zip(labels, row)}


def _run(version: ModelVersion, texts: list[str]):
    from registry.selectors import version_predictor

    predictor = version_predictor(version)
    started = time.perf_counter()
    probabilities = predictor.predict_proba(texts)
    return predictor.labels, probabilities, (time.perf_counter() - started) * 1000.0


def predict(
    *,
    actor,
    model: RegisteredModel,
    inputs: list[str],
    key: str | None = None,
    pin_version: int | None = None,
) -> list[dict]:
    """Answer each input with the version routing chose; log every answer."""
    require_serving_permission(actor, model.name)
    texts = _checked_inputs(inputs)
    key = _checked_key(key)
    table = routing_table(model)
    if pin_version is not None:
        pinned = _pinned_version(actor, model, pin_version)
        assignments = [(pinned, "pinned")] * len(texts)
    elif table.stable is None:
        raise Conflict(
            f"{model.name} has no deployed version to serve; roll out an approved version first.",
            current_status="not_deployed",
        )
    else:
        assignments = _assign(table, len(texts), key)

    groups: dict[tuple[int, str], list[int]] = {}
    versions: dict[int, ModelVersion] = {}
    for index, (version, route) in enumerate(assignments):
        groups.setdefault((version.pk, route), []).append(index)
        versions[version.pk] = version

    now = timezone.now()
    digest = prediction_log.key_hash(key)
    # Pinned calls are a tester's, not a rollout's traffic: kept out of its analysis.
    rollout_id = table.rollout_id if pin_version is None else None
    answers: list[dict | None] = [None] * len(texts)
    entries: list[dict] = []

    def log(version, route, index, label="", confidence=None, latency_ms=0.0, error=""):
        entry = prediction_log.new_entry(
            model_id=model.pk,
            version_id=version.pk,
            rollout_id=rollout_id,
            route=route,
            text=texts[index],
            key_digest=digest,
            label=label,
            confidence=confidence,
            latency_ms=latency_ms,
            created_at=now,
            error=error,
        )
        entries.append(entry)
        return entry

    def serve(version: ModelVersion, route: str, indices: list[int]) -> None:
        labels, probabilities, latency_ms = _run(version, [texts[i] for i in indices])
        for row, index in zip(probabilities, indices):
            label, confidence, by_label = _answer(version, row, labels)
            entry = log(version, route, index, label, confidence, latency_ms)
            answers[index] = {
                "prediction_id": str(entry["prediction_id"]),
                "version": version.number,
                "label": label,
                "probabilities": by_label,
                "confidence": confidence,
                "route": route,
            }

    try:
        for (version_id, route), indices in groups.items():
            version = versions[version_id]
            try:
                serve(version, route, indices)
            except Exception as exc:
                error = _short_error(exc)
                for index in indices:
                    log(version, route, index, error=error)
                if route != "candidate":
                    logger.error("serving %s failed: %s", version, error)
                    raise ModelUnavailable(f"{version} could not answer ({error}); try again later.") from exc
                # The canary failed: its errors are logged for the analysis, and the
                # stable version answers these inputs instead.
                logger.warning("candidate %s failed, stable answers instead: %s", version, error)
                try:
                    serve(table.stable, "stable", indices)
                except Exception as stable_exc:
                    error = _short_error(stable_exc)
                    for index in indices:
                        log(table.stable, "stable", index, error=error)
                    raise ModelUnavailable(
                        f"{table.stable} could not answer ({error}); try again later."
                    ) from stable_exc
    finally:
        # Logged whatever happened: failures are exactly what the analysis needs to see.
        prediction_log.enqueue(entries)

    if pin_version is None and table.shadow and table.candidate is not None:
        mirrored = [(texts[i], uuid.UUID(a["prediction_id"])) for i, a in enumerate(answers) if a["route"] == "stable"]
        if mirrored:
            shadow_mirror(table, mirrored, key_digest=digest)
    return answers


# --- shadow traffic ---------------------------------------------------------------------------

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
                    max_workers=getattr(settings, "GLASSBOX_SHADOW_WORKERS", 1), thread_name_prefix="shadow"
                )
                _shadow_pid, _shadow_pending = os.getpid(), 0
    return _shadow_pool


def shadow_mirror(table: RoutingTable, mirrored: list[tuple[str, uuid.UUID]], *, key_digest: str) -> bool:
    """Queue a copy of live inputs for the candidate; False when skipped."""
    global _shadow_pending, shadow_skipped
    pool = _pool()
    with _shadow_lock:
        if _shadow_pending + len(mirrored) > getattr(settings, "GLASSBOX_SHADOW_MAX_PENDING", 1000):
            shadow_skipped += len(mirrored)
            return False
        _shadow_pending += len(mirrored)
    pool.submit(_shadow_answer, table, mirrored, key_digest)
    return True


def _shadow_answer(table: RoutingTable, mirrored: list[tuple[str, uuid.UUID]], key_digest: str) -> None:
    global _shadow_pending
    candidate = table.candidate
    now = timezone.now()
    entries = []
    try:
        texts = [text for text, _ in mirrored]
        try:
            labels, probabilities, latency_ms = _run(candidate, texts)
            answers = [(*_answer(candidate, row, labels)[:2], "") for row in probabilities]
        except Exception as exc:
            latency_ms = 0.0
            answers = [("", None, _short_error(exc))] * len(texts)
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


# --- feedback -----------------------------------------------------------------------------------


def _checked_feedback_items(items) -> list[tuple[uuid.UUID, str]]:
    if not isinstance(items, list) or not items:
        raise InvalidInput("items must be a non-empty list of {prediction_id, label}.")
    if len(items) > FEEDBACK_MAX_ITEMS:
        raise TooLarge(f"At most {FEEDBACK_MAX_ITEMS} feedback items per call ({len(items)} sent).")
    parsed: list[tuple[uuid.UUID, str]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidInput(f"items[{index}] must be an object with prediction_id and label.")
        try:
            prediction_id = uuid.UUID(str(item.get("prediction_id")))
        except ValueError:
            raise InvalidInput(f"items[{index}].prediction_id is not a prediction id.") from None
        label = item.get("label")
        if not isinstance(label, str) or not label:
            raise InvalidInput(f"items[{index}].label must be a non-empty text.")
        parsed.append((prediction_id, label))
    seen = set()
    for prediction_id, _ in parsed:
        if prediction_id in seen:
            raise InvalidInput(f"prediction {prediction_id} appears twice in one call.")
        seen.add(prediction_id)
    return parsed


def _logged_predictions(model: RegisteredModel, ids: list[uuid.UUID]) -> dict:
    from rollouts.models import PredictionLog

    rows = PredictionLog.objects.select_related("version").filter(
        model_id=model.pk, prediction_id__in=ids, shadow=False
    )
    return {row.prediction_id: row for row in rows}


def feedback_record(*, actor, model: RegisteredModel, items: list[dict]) -> dict:
    """Store the true labels of earlier predictions, all or none."""
    from rollouts.models import Feedback

    try:
        if not (actor is not None and actor.is_authenticated and actor.has_perm("rollouts.add_feedback")):
            raise NotPermitted("You have no role that may send feedback on predictions.")
        parsed = _checked_feedback_items(items)
        ids = [prediction_id for prediction_id, _ in parsed]
        rows = _logged_predictions(model, ids)
        if len(rows) < len(ids):
            # A prediction made a moment ago may still be in this process's buffer.
            prediction_log.flush_prediction_logs(timeout=5)
            rows = _logged_predictions(model, ids)
        for prediction_id, label in parsed:
            row = rows.get(prediction_id)
            if row is None:
                raise NotFound(
                    f"unknown prediction {prediction_id} for {model.name} (predictions are logged "
                    "within about a second; retry if it was made just now)."
                )
            if row.error:
                raise Conflict(
                    f"prediction {prediction_id} failed; there is no answer to grade.", current_status="failed"
                )
            if label not in (row.version.labels or []):
                raise InvalidInput(
                    f"label {label!r} is not one of {row.version}'s labels ({', '.join(row.version.labels)})."
                )
        with transaction.atomic():
            already = set(
                Feedback.objects.filter(prediction__in=rows.values()).values_list(
                    "prediction__prediction_id", flat=True
                )
            )
            if already:
                first = min(str(p) for p in already)
                raise Conflict(f"prediction {first} already has feedback.", current_status="has_feedback")
            feedback = [
                Feedback(prediction=rows[pid], label=label, correct=label == rows[pid].label, created_by=actor)
                for pid, label in parsed
            ]
            try:
                with transaction.atomic():
                    Feedback.objects.bulk_create(feedback)
            except IntegrityError:
                # Someone else's feedback on the same prediction won the race.
                raise Conflict(
                    "one of these predictions received feedback meanwhile.", current_status="has_feedback"
                ) from None
            correct = sum(1 for f in feedback if f.correct)
            by_version: dict[str, int] = {}
            for f in feedback:
                by_version[str(f.prediction.version.number)] = by_version.get(str(f.prediction.version.number), 0) + 1
            record_event(
                actor=actor,
                action="feedback.record",
                obj=model,
                detail={"items": len(feedback), "correct": correct, "by_version": by_version},
            )
        return {"recorded": len(feedback), "correct": correct, "incorrect": len(feedback) - correct}
    except GlassboxError as exc:
        record_refusal(actor=actor, action="feedback.record", reason=exc.message, obj=model)
        raise
