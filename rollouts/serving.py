"""Serving predictions of a model (the data plane).

Decisions, so callers know what to expect:
- Routing: with a `key`, every input of the call shares the key, so one call
  is answered by one version (sticky per key). Without a key, each input is
  routed at random by the candidate's weight on its own.
- Each version's inputs go to its predictor in one batch call; the latency
  logged for an input is the duration of its call's batch. Transformers
  calls from concurrent requests share forward passes
  (rollouts/request_batching.py); their latency includes the short wait.
- Errors: a candidate that raises has its inputs logged as errors (the
  analysis counts them and aborts it) and answered by the stable version
  instead, so a broken canary costs its users nothing. When the stable (or a
  pinned) version raises, the call answers 503 with a `detail`, and every
  input is logged with the error text.
- Shadow: while the rollout shadows, inputs answered by the stable version are
  mirrored to the candidate in the background (rollouts/shadow.py) and
  never returned.
- No audit event per prediction: PredictionLog is the record of the data
  plane. Refused calls for lack of permission are audited; feedback (ground
  truth a person asserts, rollouts.services.feedback_record) is audited per
  call.
"""

from __future__ import annotations

import logging
import time
import uuid

from django.conf import settings
from django.utils import timezone

from glassbox.errors import Conflict, GlassboxError, InvalidInput, NotFound, NotPermitted, TooLarge
from governance.audit import record_refusal
from governance.audit_actions import AuditAction
from registry.models import ModelVersion, RegisteredModel
from rollouts import prediction_log
from rollouts.request_batching import batched
from rollouts.routing import RoutingTable, routing_table
from rollouts.serving_cache import may_serve_somewhere, serving_access
from rollouts.shadow import shadow_mirror

logger = logging.getLogger(__name__)

KEY_MAX_CHARS = 200
PIN_STATUSES = (ModelVersion.Status.DEPLOYED, ModelVersion.Status.APPROVED)


class ModelUnavailable(GlassboxError):
    """The version that must answer failed; the client may retry."""

    status_code = 503
    default_code = "model_unavailable"


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def require_serving_permission(actor, model_name: str = "") -> None:
    """Asked before the model is looked up: a caller who may predict with no
    model at all is refused the same way whether the name exists or not."""
    if not may_serve_somewhere(actor):
        message = "You have no role that may request predictions."
        record_refusal(
            actor=actor,
            action=AuditAction.PREDICTION_REQUEST,
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
        if "\x00" in text:
            # PostgreSQL text cannot hold it: the prediction log could not record the input.
            raise InvalidInput(f"inputs[{index}] contains a NUL character.")
        if len(text) > max_chars:
            raise TooLarge(f"inputs[{index}] has {len(text)} characters; at most {max_chars} are allowed.")
    return inputs


def _checked_key(key) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or "\x00" in key:
        raise InvalidInput("key must be a non-empty text without NUL characters when given.")
    if len(key) > KEY_MAX_CHARS:
        raise InvalidInput(f"key is at most {KEY_MAX_CHARS} characters.")
    return key


def require_model_serving_permission(actor, model: RegisteredModel, *, action: AuditAction) -> None:
    """The caller may predict with (or send feedback on) this model: an
    engineer of its team. One they may not read is answered as missing."""
    access = serving_access(actor, model)
    if access.develop:
        return
    if not access.read:
        raise NotFound(f"No model named {model.name!r}.")
    message = f"Only engineers of team {model.team} may use {model.name}'s serving API."
    record_refusal(actor=actor, action=action, reason=message, obj=model)
    raise NotPermitted(message)


def _pinned_version(actor, model: RegisteredModel, number: int) -> ModelVersion:
    if not serving_access(actor, model).develop:
        message = "You have no role that may pin the version that answers."
        record_refusal(
            actor=actor, action=AuditAction.PREDICTION_PIN, reason=message, obj=model, detail={"version": number}
        )
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


def answer_of(row, labels: list[str]) -> tuple[str, float, dict]:
    best = int(row.argmax())
    return labels[best], float(row[best]), {label: float(p) for label, p in zip(labels, row)}


def run_model(version: ModelVersion, texts: list[str]):
    """(labels, probabilities per text, milliseconds of the one batch call)."""
    from registry.selectors import version_predictor

    predictor = version_predictor(version)
    # Transformers calls share forward passes with concurrent calls; the
    # latency is the caller's: its wait for the shared pass included.
    runner = batched(predictor) if version.flavor == ModelVersion.Flavor.TRANSFORMERS else predictor
    started = time.perf_counter()
    probabilities = runner.predict_proba(texts)
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
    require_model_serving_permission(actor, model, action=AuditAction.PREDICTION_REQUEST)
    if (archived := model.archived_refusal("serve predictions")) is not None:
        raise archived
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
            redact_input=model.redact_inputs,
        )
        entries.append(entry)
        return entry

    def serve(version: ModelVersion, route: str, indices: list[int]) -> None:
        labels, probabilities, latency_ms = run_model(version, [texts[i] for i in indices])
        for row, index in zip(probabilities, indices):
            label, confidence, by_label = answer_of(row, labels)
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
                error = short_error(exc)
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
                    error = short_error(stable_exc)
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
