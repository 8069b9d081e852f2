"""Every write to rollouts and to what serves a model's traffic.

A rollout moves a model's traffic from its stable version to an approved
candidate step by step (Argo Rollouts' canary): a shadow step, then growing
weights, each baking for a while under analysis (rollouts/analysis.py).

Decisions worth knowing:

- A rollout starts `progressing` at once: step 0's bake clock starts when it
  is created. `pending` exists only inside the starting transaction. The
  candidate is warmed by the workers after commit (registry.tasks.warm_version);
  web processes load it through the predictor cache on its first request.
- First deployment (the model serves nothing yet): there is nothing to
  compare a candidate against, so it is deployed at once and the rollout is
  recorded as promoted ("first deployment: nothing to compare against"), like
  Argo's initial deploy, which skips the canary steps.
- Promotion: the candidate becomes stable (status deployed); the old stable
  stays deployed and loaded as `previous_version` for an instant rollback
  until GLASSBOX_RETIRE_PREVIOUS_AFTER_SECONDS pass (serving_retire_previous);
  an older previous version is retired at once.
- Abort is the stop button: status aborted, every request back to stable at
  once. The candidate stays approved, so it can be rolled out again later
  (after a fix elsewhere, e.g. a quieter reference set or other thresholds).
- Rollback (Argo's `undo`) is the way back after a promotion: the previous
  stable, still deployed and loaded, serves all traffic at once; the version
  it replaced returns to `approved` and the promoted rollout is marked rolled
  back. Only while no rollout is active (an active one is aborted instead)
  and the previous version is not retired yet.
- `actor=None` means the platform itself (the analysis task).
- A candidate must hold its certification: past its re-certification date,
  or after a rejected re-certification round, a rollout does not start
  (governance.selectors.certification_refusal). What already serves is never
  stopped for it; a certification alert says so instead (certification_check).

- Feedback (ground truth a person asserts about earlier predictions) is an
  observation, like a prediction log row: each call stores its rows (all or
  none, one per prediction) without taking the audit chain's lock, and
  `feedback_summarize` (celery beat) appends one audited summary per sender
  and model per interval - who sent how many, how many were correct. Every
  row goes into exactly one summary. Refused calls are audited at once.
- Monitoring alerts (raised and cleared by the platform, `monitor_check`)
  are written here too, each with its audit event.

Locks are always taken ServingState first, then Rollout (`_lock`).
"""

from __future__ import annotations

import copy
import logging
import uuid
from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from glassbox.errors import Conflict, GlassboxError, InvalidInput, NotFound, NotPermitted, TooLarge
from governance.access import has_standing
from governance.audit import record_event, record_refusal
from governance.audit_actions import AuditAction
from governance.selectors import certification_refusal, certification_state, versions_with_refused_certification
from registry.models import Dataset, ModelVersion, RegisteredModel
from registry.services import enqueue_warm, version_move
from rollouts import aggregation, prediction_log, selectors
from rollouts.models import (
    DEFAULT_BAKE_SECONDS,
    DEFAULT_STEPS,
    DEFAULT_THRESHOLDS,
    Alert,
    AnalysisRun,
    Feedback,
    PredictionLog,
    Rollout,
    ServingState,
    VersionReference,
)
from rollouts.routing import invalidate_routing

logger = logging.getLogger(__name__)

Status = Rollout.Status
MAX_STEPS = 20
MAX_BAKE_SECONDS = 7 * 24 * 3600
MAX_INTERVAL_SECONDS = 24 * 3600
FIRST_DEPLOYMENT_REASON = "first deployment: nothing to compare against"
FEEDBACK_MAX_ITEMS = 1000
# Feedback rows folded into summaries per transaction (a long backlog takes several).
FEEDBACK_SUMMARY_BATCH = 2000

# Allowed range of each threshold: (kind, lowest, highest), both inclusive.
THRESHOLD_RANGES: dict[str, tuple[type, float, float]] = {
    "max_error_rate": (float, 0.0, 1.0),
    "max_latency_p95_ratio": (float, 0.01, 1000.0),
    "max_label_divergence": (float, 0.0, 1.0),
    "min_shadow_agreement": (float, 0.0, 1.0),
    "max_input_drift": (float, 0.0, 1.0),
    "min_requests": (int, 1, 1_000_000),
    "failure_limit": (int, 0, 1000),
}


def _min_interval() -> int:
    return int(settings.GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS)


# --- validation --------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def clean_steps(steps) -> list[dict]:
    """Steps as stored: [{weight, shadow, bake_seconds}], or InvalidInput
    naming the first bad step (counted from 1, as a person reads them)."""
    if steps is None:
        return copy.deepcopy(DEFAULT_STEPS)
    if not isinstance(steps, list) or not steps:
        raise InvalidInput("steps must be a non-empty list of {weight, shadow, bake_seconds}.")
    if len(steps) > MAX_STEPS:
        raise InvalidInput(f"At most {MAX_STEPS} steps.")
    cleaned: list[dict] = []
    previous_weight = 0
    for index, step in enumerate(steps):
        name = f"step {index + 1}"
        if not isinstance(step, dict):
            raise InvalidInput(f"{name}: must be an object with weight, shadow and bake_seconds.")
        unknown = sorted(set(step) - {"weight", "shadow", "bake_seconds"})
        if unknown:
            raise InvalidInput(f"{name}: unknown field {', '.join(map(str, unknown))}.")
        weight = step.get("weight")
        shadow = step.get("shadow", False)
        bake = step.get("bake_seconds", DEFAULT_BAKE_SECONDS)
        if not _is_int(weight) or not 0 <= weight <= 100:
            raise InvalidInput(f"{name}: weight must be a whole percentage from 0 to 100 (got {weight!r}).")
        if not isinstance(shadow, bool):
            raise InvalidInput(f"{name}: shadow must be true or false.")
        if not _is_int(bake) or not 0 <= bake <= MAX_BAKE_SECONDS:
            raise InvalidInput(f"{name}: bake_seconds must be a whole number from 0 to {MAX_BAKE_SECONDS}.")
        if shadow:
            if index != 0:
                raise InvalidInput(f"{name}: a shadow step may only come first.")
            if weight != 0:
                raise InvalidInput(f"{name}: a shadow step has weight 0 (it mirrors traffic, it answers none).")
        elif weight <= previous_weight:
            raise InvalidInput(
                f"{name}: weight {weight} must be above the previous step's {previous_weight} "
                "(weights increase strictly)."
            )
        else:
            previous_weight = weight
        cleaned.append({"weight": weight, "shadow": shadow, "bake_seconds": bake})
    if cleaned[-1]["weight"] != 100:
        raise InvalidInput(f"step {len(cleaned)}: the last step must send 100% of traffic to the candidate.")
    return cleaned


def clean_thresholds(thresholds) -> dict:
    if thresholds is None:
        return dict(DEFAULT_THRESHOLDS)
    if not isinstance(thresholds, dict):
        raise InvalidInput("thresholds must be an object of threshold name to number.")
    unknown = sorted(set(thresholds) - set(THRESHOLD_RANGES))
    if unknown:
        raise InvalidInput(
            f"Unknown thresholds: {', '.join(map(str, unknown))} (known: {', '.join(THRESHOLD_RANGES)})."
        )
    merged = dict(DEFAULT_THRESHOLDS)
    for name, value in thresholds.items():
        kind, low, high = THRESHOLD_RANGES[name]
        valid_type = _is_int(value) if kind is int else (_is_int(value) or isinstance(value, float))
        if not valid_type or not low <= value <= high:
            what = "a whole number" if kind is int else "a number"
            raise InvalidInput(f"threshold {name} must be {what} from {low} to {high} (got {value!r}).")
        merged[name] = kind(value)
    return merged


def clean_interval(seconds) -> int:
    if seconds is None:
        return max(_min_interval(), Rollout._meta.get_field("analysis_interval_seconds").default)
    low = _min_interval()
    if not _is_int(seconds) or not low <= seconds <= MAX_INTERVAL_SECONDS:
        raise InvalidInput(f"analysis_interval_seconds must be a whole number from {low} to {MAX_INTERVAL_SECONDS}.")
    return seconds


# --- helpers -----------------------------------------------------------------------------


def _may_change(actor, model: RegisteredModel) -> bool:
    # Rollouts and their gates (and, later, rollback) are the maintainers' (governance/access.py).
    return model.access_of(actor).release


def _after_commit_invalidate(model_id: int) -> None:
    transaction.on_commit(lambda: invalidate_routing(model_id))


def _lock(model: RegisteredModel, rollout_id: int | None = None) -> tuple[ServingState, Rollout | None]:
    """Lock the model's serving state, then the rollout: always in this order."""
    ServingState.objects.get_or_create(model=model)
    state = ServingState.objects.select_for_update().get(model=model)
    rollout = None
    if rollout_id is not None:
        rollout = (
            Rollout.objects.select_for_update(of=("self",))
            .select_related("model", "candidate", "stable", "created_by")
            .get(pk=rollout_id)
        )
    return state, rollout


def _snapshot(rollout: Rollout) -> dict:
    return {
        "status": rollout.status,
        "current_step": rollout.current_step,
        "candidate_weight": rollout.candidate_weight,
        "shadow": rollout.is_shadowing,
    }


def _move(rollout: Rollout, to_status: str, *, reason: str = "") -> None:
    """The one place a rollout's status changes (rows already locked)."""
    _require_move(rollout, to_status)
    rollout.status = to_status
    rollout.status_reason = reason[:2000]
    if to_status in (Status.PROMOTED, Status.ABORTED):
        rollout.finished_at = timezone.now()


def _require_move(rollout: Rollout, to_status: str) -> None:
    if not rollout.can_move_to(to_status):
        raise Conflict(
            f"Rollout #{rollout.pk} is {rollout.status}; it cannot move to {to_status}.",
            current_status=rollout.status,
        )


def _retire(version: ModelVersion, *, actor, reason: str) -> None:
    version_move(
        actor=actor,
        version=version,
        to_status=ModelVersion.Status.RETIRED,
        action=AuditAction.VERSION_RETIRE,
        detail={"reason": reason},
    )


def _promote(state: ServingState, rollout: Rollout, *, actor, reason: str, now: datetime) -> None:
    """Candidate becomes stable; the old stable stays deployed as the previous
    version (instant rollback) until its retire time; an older one retires."""
    candidate = rollout.candidate
    version_move(
        actor=actor,
        version=candidate,
        to_status=ModelVersion.Status.DEPLOYED,
        action=AuditAction.VERSION_DEPLOY,
        detail={"rollout": rollout.pk},
    )
    old_stable, old_previous = state.stable_version, state.previous_version
    if old_previous is not None and old_previous.pk not in (candidate.pk, getattr(old_stable, "pk", None)):
        _retire(old_previous, actor=actor, reason=f"replaced as previous version by rollout #{rollout.pk}")
    state.stable_version = candidate
    state.previous_version = old_stable
    retire_after = int(settings.GLASSBOX_RETIRE_PREVIOUS_AFTER_SECONDS)
    state.previous_retire_at = now + timedelta(seconds=retire_after) if old_stable is not None else None
    state.save(update_fields=["stable_version", "previous_version", "previous_retire_at", "updated_at"])
    _move(rollout, Status.PROMOTED, reason=reason)


# --- starting ----------------------------------------------------------------------------


def _reference_dataset_for(candidate: ModelVersion) -> Dataset | None:
    """The dataset of the newest succeeded explanation report of the candidate
    that was run over a dataset: the data reviewers saw it judged on."""
    from explanations.models import ExplanationReport

    report = (
        ExplanationReport.objects.filter(
            version=candidate, status=ExplanationReport.Status.SUCCEEDED, dataset__isnull=False
        )
        .select_related("dataset")
        .order_by("-finished_at", "-id")
        .first()
    )
    return report.dataset if report is not None else None


def reference_profile(*, version: ModelVersion, dataset: Dataset) -> dict:
    """The drift profile of a dataset's texts, as this version's tokenizer
    knows them. Loads the model and reads the dataset: call it outside locks."""
    from registry.predictors import ArtifactLoadError
    from registry.selectors import dataset_rows, version_predictor
    from rollouts.drift import profile_texts

    try:
        predictor = version_predictor(version)
    except (ArtifactLoadError, OSError) as exc:
        raise Conflict(f"{version} cannot be loaded to profile its reference set: {exc}") from exc
    rows = dataset_rows(dataset)
    if not rows:
        raise InvalidInput(f"Dataset {dataset} has no rows.")
    return profile_texts((text for text, _ in rows), predictor.known_characters())


def _reference_write(*, actor, version: ModelVersion, dataset: Dataset, profile: dict) -> VersionReference:
    existing = VersionReference.objects.filter(version=version).select_related("dataset").first()
    before = {"dataset": existing.dataset_id} if existing is not None else {}
    reference, _ = VersionReference.objects.update_or_create(
        version=version, defaults={"dataset": dataset, "profile": profile}
    )
    record_event(
        actor=actor,
        action=AuditAction.VERSION_REFERENCE_SET,
        obj=version,
        changes={"before": before, "after": {"dataset": dataset.pk}},
        detail={"dataset": str(dataset), "texts": profile.get("texts")},
    )
    return reference


def version_reference_set(*, actor, version: ModelVersion, dataset: Dataset) -> VersionReference:
    """Set the dataset that a version's live inputs are compared with for drift."""
    if not _may_change(actor, version.model):
        record_refusal(actor=actor, action=AuditAction.VERSION_REFERENCE_SET, reason="not permitted", obj=version)
        raise NotPermitted("Only maintainers of the model's team may set a version's reference dataset.")
    profile = reference_profile(version=version, dataset=dataset)
    with transaction.atomic():
        return _reference_write(actor=actor, version=version, dataset=dataset, profile=profile)


def rollout_start(
    *,
    actor,
    model: RegisteredModel,
    candidate: ModelVersion | None,
    steps: list[dict] | None = None,
    thresholds: dict | None = None,
    analysis_interval_seconds: int | None = None,
    reference_dataset: Dataset | None = None,
) -> Rollout:
    """Start moving `model`'s traffic to `candidate`. Refusals are 4xx errors,
    recorded in the trail with their reason; nothing else changes. (A page
    with no start form passes candidate None: the refusal is still recorded.)"""
    try:
        return _rollout_start(
            actor=actor,
            model=model,
            candidate=candidate,
            steps=steps,
            thresholds=thresholds,
            interval=analysis_interval_seconds,
            reference_dataset=reference_dataset,
        )
    except GlassboxError as exc:
        record_refusal(
            actor=actor,
            action=AuditAction.ROLLOUT_START,
            reason=exc.message,
            obj=model,
            detail={"candidate": getattr(candidate, "number", None)},
        )
        raise


def _rollout_start(*, actor, model, candidate, steps, thresholds, interval, reference_dataset) -> Rollout:
    if not _may_change(actor, model):
        raise NotPermitted("Only maintainers of the model's team may start rollouts.")
    if candidate is None:
        raise InvalidInput("Choose the version to roll out.")
    if candidate.model_id != model.pk:
        raise InvalidInput(f"{candidate} is not a version of {model.name}.")
    if (archived := model.archived_refusal("take rollouts")) is not None:
        raise archived
    if candidate.status != ModelVersion.Status.APPROVED:
        raise Conflict(
            f"{candidate} is {candidate.status}: only an approved version can roll out.",
            current_status=candidate.status,
        )
    _require_certified(candidate)
    steps = clean_steps(steps)
    thresholds = clean_thresholds(thresholds)
    interval = clean_interval(interval)

    # The reference profile needs the model loaded: computed before any lock.
    dataset = reference_dataset
    if dataset is None and not VersionReference.objects.filter(version=candidate).exists():
        dataset = _reference_dataset_for(candidate)
    profile = reference_profile(version=candidate, dataset=dataset) if dataset is not None else None

    try:
        with transaction.atomic():
            state, _ = _lock(model)
            # Under the model row's lock, as an archive takes it: one of the two sees the other.
            locked_model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
            if (archived := locked_model.archived_refusal("take rollouts")) is not None:
                raise archived
            active = Rollout.objects.filter(model=model, status__in=Rollout.ACTIVE_STATUSES).first()
            if active is not None:
                raise Conflict(
                    f"rollout #{active.pk} is already active for {model.name}.",
                    code="rollout_active",
                    rollout=active.pk,
                )
            # Re-read under the lock: a racing first deployment may have deployed it.
            candidate = ModelVersion.objects.select_related("model").get(pk=candidate.pk)
            if candidate.status != ModelVersion.Status.APPROVED:
                raise Conflict(
                    f"{candidate} is {candidate.status}: only an approved version can roll out.",
                    current_status=candidate.status,
                )
            _require_certified(candidate)  # a round rejected meanwhile counts
            now = timezone.now()
            rollout = Rollout.objects.create(
                model=model,
                candidate=candidate,
                stable=state.stable_version,
                status=Status.PENDING,
                steps=steps,
                thresholds=thresholds,
                analysis_interval_seconds=interval,
                step_started_at=now,
                created_by=actor,
            )
            if profile is not None:
                _reference_write(actor=actor, version=candidate, dataset=dataset, profile=profile)
            if state.stable_version is None:
                _promote(state, rollout, actor=actor, reason=FIRST_DEPLOYMENT_REASON, now=now)
            else:
                _move(rollout, Status.PROGRESSING)
            rollout.save()
            record_event(
                actor=actor,
                action=AuditAction.ROLLOUT_START,
                obj=rollout,
                changes={"after": _snapshot(rollout)},
                detail={
                    "candidate": candidate.number,
                    "stable": getattr(rollout.stable, "number", None),
                    "steps": steps,
                    "thresholds": thresholds,
                    "analysis_interval_seconds": interval,
                    "reference_dataset": dataset.pk if dataset is not None else None,
                    "first_deployment": rollout.stable is None,
                },
            )
            transaction.on_commit(lambda: enqueue_warm(candidate.pk))
            _after_commit_invalidate(model.pk)
    except IntegrityError as exc:
        # The partial unique index caught a start that raced past the lock
        # (e.g. a serving state row created by both at once).
        active = Rollout.objects.filter(model=model, status__in=Rollout.ACTIVE_STATUSES).first()
        number = f"#{active.pk}" if active is not None else "another rollout"
        raise Conflict(f"rollout {number} is already active for {model.name}.") from exc
    return rollout


def _require_certified(candidate: ModelVersion) -> None:
    """An approval holds until its re-certification date, and not after a
    rejected re-certification round: past either, no new rollout."""
    refusal = certification_refusal(candidate)
    if refusal is not None:
        raise refusal


# --- manual gates ------------------------------------------------------------------------


def _refused_gate(rollout: Rollout, gate: str) -> Conflict:
    if gate == "resume":
        message = f"Rollout #{rollout.pk} is {rollout.status}; only a paused rollout can resume."
    elif gate == "step":
        message = f"Rollout #{rollout.pk} is {rollout.status}; only an active rollout can move to its next step."
    else:
        message = f"Rollout #{rollout.pk} is {rollout.status}; it cannot move to {Rollout.ACTION_TARGETS[gate]}."
    return Conflict(message, current_status=rollout.status)


def _act(*, actor, rollout: Rollout, gate: str, action: AuditAction, apply, reason: str = "") -> Rollout:
    """Run one manual gate (a key of Rollout.ACTION_TARGETS) under the
    locks; refusals are recorded."""
    try:
        if actor is not None and not _may_change(actor, rollout.model):
            raise NotPermitted("Only maintainers of the model's team may act on rollouts.")
        if not isinstance(reason, str) or len(reason) > 2000:
            raise InvalidInput("reason must be text of at most 2000 characters.")
        with transaction.atomic():
            state, locked = _lock(rollout.model, rollout.pk)
            # The same question the rollout page asks (the role was checked above).
            if locked.action_refusal(None, gate) is not None:
                raise _refused_gate(locked, gate)
            before = _snapshot(locked)
            detail = apply(state, locked) or {}
            locked.save()
            record_event(
                actor=actor,
                action=action,
                obj=locked,
                changes={"before": before, "after": _snapshot(locked)},
                detail={"reason": reason, **detail},
            )
            _after_commit_invalidate(locked.model_id)
        return locked
    except GlassboxError as exc:
        record_refusal(actor=actor, action=action, reason=exc.message, obj=rollout)
        raise


def rollout_promote(*, actor, rollout: Rollout, reason: str = "") -> Rollout:
    """Skip the remaining steps: the candidate becomes stable now."""

    def apply(state, locked):
        _promote(state, locked, actor=actor, reason=reason or "promoted by hand", now=timezone.now())

    return _act(
        actor=actor, rollout=rollout, gate="promote", action=AuditAction.ROLLOUT_PROMOTE, apply=apply, reason=reason
    )


def rollout_promote_step(*, actor, rollout: Rollout, reason: str = "") -> Rollout:
    """Move to the next step now, without waiting for its bake time (Argo's
    promote of one step). A paused rollout carries on (progressing) at the
    new step; the step's bake clock and the analysis window start again, so
    the next analysis judges traffic at the new weight only. At the last step
    the next move is the promotion itself."""
    try:
        if not _may_change(actor, rollout.model):
            raise NotPermitted("Only engineers may act on rollouts.")
        if not isinstance(reason, str) or len(reason) > 2000:
            raise InvalidInput("reason must be text of at most 2000 characters.")
        with transaction.atomic():
            state, locked = _lock(rollout.model, rollout.pk)
            if locked.action_refusal(None, "step") is not None:
                raise _refused_gate(locked, "step")
            before = _snapshot(locked)
            now = timezone.now()
            if locked.current_step + 1 >= len(locked.steps):
                _promote(state, locked, actor=actor, reason=reason or "last step promoted by hand", now=now)
                action = AuditAction.ROLLOUT_PROMOTE
            else:
                if locked.status == Status.PAUSED:
                    _move(locked, Status.PROGRESSING)
                locked.current_step += 1
                locked.step_started_at = now
                locked.last_analysis_at = now
                action = AuditAction.ROLLOUT_ADVANCE
            locked.save()
            record_event(
                actor=actor,
                action=action,
                obj=locked,
                changes={"before": before, "after": _snapshot(locked)},
                detail={"reason": reason, "step": locked.current_step, "by_hand": True},
            )
            _after_commit_invalidate(locked.model_id)
        return locked
    except GlassboxError as exc:
        record_refusal(actor=actor, action=AuditAction.ROLLOUT_ADVANCE, reason=exc.message, obj=rollout)
        raise


def rollout_pause(*, actor, rollout: Rollout, reason: str = "") -> Rollout:
    """Hold the current step (its weight stays); analysis stops acting."""

    def apply(state, locked):
        _move(locked, Status.PAUSED, reason=reason or "paused by hand")

    return _act(
        actor=actor, rollout=rollout, gate="pause", action=AuditAction.ROLLOUT_PAUSE, apply=apply, reason=reason
    )


def rollout_resume(*, actor, rollout: Rollout) -> Rollout:
    """Carry on from the current step; its bake time starts again, and so
    does the analysis window (what happened while paused was judged by a person)."""

    def apply(state, locked):
        _move(locked, Status.PROGRESSING)
        now = timezone.now()
        locked.step_started_at = now
        locked.last_analysis_at = now
        return {"step": locked.current_step}

    return _act(actor=actor, rollout=rollout, gate="resume", action=AuditAction.ROLLOUT_RESUME, apply=apply)


def rollout_abort(*, actor, rollout: Rollout, reason: str = "") -> Rollout:
    """The stop button: every request goes back to stable at once. The
    candidate stays approved (it may be rolled out again later)."""

    def apply(state, locked):
        _move(locked, Status.ABORTED, reason=reason or "aborted by hand")

    return _act(
        actor=actor, rollout=rollout, gate="abort", action=AuditAction.ROLLOUT_ABORT, apply=apply, reason=reason
    )


# --- rollback ----------------------------------------------------------------------------


def serving_rollback(*, actor, model: RegisteredModel, reason: str) -> ServingState:
    """Back to the previous deployed version at once (Argo's undo): it serves
    100 % of traffic as soon as the routing tables follow (this process at
    commit, every other one within routing.ROUTING_TTL_SECONDS); the version
    it replaced returns to approved, and the promoted rollout that deployed
    it is marked rolled back. Refused (409, with the serving state and what
    to do instead) while a rollout is active or with no previous version."""
    try:
        if not _may_change(actor, model):
            raise NotPermitted("Only engineers may roll back a model.")
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("reason is required: say why the model is rolled back.")
        if len(reason) > 2000:
            raise InvalidInput("reason must be text of at most 2000 characters.")
        with transaction.atomic():
            # The analysis tick and the gates lock in this same order:
            # serving state, then the rollout, then (version_move) the version.
            state, _ = _lock(model)
            state = ServingState.objects.select_related("model", "stable_version", "previous_version").get(pk=state.pk)
            active = selectors.active_rollout(model)
            refusal = state.rollback_refusal(None, active)
            if refusal is not None:
                raise Conflict(refusal, serving=selectors.serving_summary(state, active))
            rolled_back, restored = state.stable_version, state.previous_version
            undone = (
                Rollout.objects.select_for_update(of=("self",))
                .filter(model=model, candidate=rolled_back, status=Status.PROMOTED, rolled_back_at__isnull=True)
                .order_by("-finished_at", "-id")
                .first()
            )
            before = {"stable": rolled_back.number, "previous": restored.number}
            version_move(
                actor=actor,
                version=rolled_back,
                to_status=ModelVersion.Status.APPROVED,
                action=AuditAction.VERSION_ROLLBACK,
                detail={"reason": reason, "restored": restored.number, "rollout": getattr(undone, "pk", None)},
            )
            state.stable_version = restored
            state.previous_version = None
            state.previous_retire_at = None
            state.save(update_fields=["stable_version", "previous_version", "previous_retire_at", "updated_at"])
            if undone is not None:
                undone.rolled_back_at = timezone.now()
                undone.rolled_back_by = actor
                undone.rollback_reason = reason
                undone.save(update_fields=["rolled_back_at", "rolled_back_by", "rollback_reason"])
            record_event(
                actor=actor,
                action=AuditAction.ROLLOUT_ROLLBACK,
                obj=undone if undone is not None else state,
                version_number=rolled_back.number,
                changes={"before": before, "after": {"stable": restored.number, "previous": None}},
                detail={"reason": reason, "rolled_back": rolled_back.number, "restored": restored.number},
            )
            _after_commit_invalidate(model.pk)
        return state
    except GlassboxError as exc:
        record_refusal(actor=actor, action=AuditAction.ROLLOUT_ROLLBACK, reason=exc.message, obj=model)
        raise


# --- what the analysis does (actor None: the platform) -----------------------------------


def rollout_record_analysis(
    *,
    rollout: Rollout,
    expected_last_analysis_at: datetime | None,
    expected_step: int,
    window_start: datetime,
    window_end: datetime,
    measurements: list[dict],
    verdict: str,
    now: datetime,
) -> AnalysisRun | None:
    """Store one analysis run and act on its verdict (Argo semantics), under
    the locks. Returns None when another tick got there first (the rollout
    moved on since it was measured, or this window was already analysed)."""
    with transaction.atomic():
        state, locked = _lock(rollout.model, rollout.pk)
        if (
            locked.status != Status.PROGRESSING
            or locked.last_analysis_at != expected_last_analysis_at
            or locked.current_step != expected_step
            or AnalysisRun.objects.filter(rollout=locked, window_end=window_end).exists()
        ):
            return None
        before = _snapshot(locked)
        thresholds = {**DEFAULT_THRESHOLDS, **locked.thresholds}
        step = locked.step
        action, event = "none", None
        if verdict == AnalysisRun.Verdict.FAILED:
            locked.failures += 1
            if locked.failures > int(thresholds["failure_limit"]):
                failed = ", ".join(m["name"] for m in measurements if m["verdict"] == "failed")
                _move(
                    locked,
                    Status.ABORTED,
                    reason=f"analysis failed ({failed}); failures {locked.failures} "
                    f"> limit {thresholds['failure_limit']}: traffic back to stable",
                )
                action, event = "aborted", AuditAction.ROLLOUT_ABORT
        elif verdict == AnalysisRun.Verdict.INCONCLUSIVE:
            unclear = ", ".join(
                f"{m['name']} ({m.get('detail') or 'inconclusive'})"
                for m in measurements
                if m["verdict"] == "inconclusive"
            )
            _move(locked, Status.PAUSED, reason=f"analysis inconclusive: {unclear}; a person decides")
            action, event = "paused", AuditAction.ROLLOUT_PAUSE
        else:
            baked = (now - locked.step_started_at).total_seconds() >= int(step.get("bake_seconds", 0))
            failed_in_step = AnalysisRun.objects.filter(
                rollout=locked,
                step_index=locked.current_step,
                verdict=AnalysisRun.Verdict.FAILED,
                window_end__gt=locked.step_started_at,
            ).exists()
            if baked and not failed_in_step:
                if locked.current_step + 1 < len(locked.steps):
                    locked.current_step += 1
                    locked.step_started_at = now
                    action, event = "advanced", AuditAction.ROLLOUT_ADVANCE
                else:
                    _promote(state, locked, actor=None, reason="all steps passed analysis", now=now)
                    action, event = "promoted", AuditAction.ROLLOUT_PROMOTE
        run = AnalysisRun.objects.create(
            rollout=locked,
            step_index=expected_step,
            window_start=window_start,
            window_end=window_end,
            measurements=measurements,
            verdict=verdict,
            action=action,
        )
        locked.last_analysis_at = window_end
        locked.save()
        record_event(
            actor=None,
            action=AuditAction.ROLLOUT_ANALYSIS,
            obj=locked,
            detail={
                "analysis_run": run.pk,
                "step": expected_step,
                "verdict": verdict,
                "action": action,
                "window": [window_start.isoformat(), window_end.isoformat()],
            },
        )
        if event is not None:
            record_event(
                actor=None,
                action=event,
                obj=locked,
                changes={"before": before, "after": _snapshot(locked)},
                detail={"reason": locked.status_reason, "analysis_run": run.pk},
            )
            _after_commit_invalidate(locked.model_id)
        return run


def rollout_analysis_failed(*, rollout_id: int, reason: str) -> None:
    """The analysis job itself crashed (not the candidate): say so in the
    trail. The rollout does not advance without an analysis, so it waits."""
    rollout = Rollout.objects.select_related("model", "candidate").filter(pk=rollout_id).first()
    if rollout is None:
        return
    with transaction.atomic():
        record_event(
            actor=None, action=AuditAction.ROLLOUT_ANALYSIS_FAILED, obj=rollout, detail={"reason": reason[:1000]}
        )


def serving_retire_previous(*, now: datetime | None = None) -> list[ModelVersion]:
    """Retire the previous versions kept for rollback whose time is up."""
    now = now or timezone.now()
    retired = []
    due = ServingState.objects.filter(previous_version__isnull=False, previous_retire_at__lte=now)
    for model_id in due.values_list("model_id", flat=True):
        with transaction.atomic():
            state = (
                ServingState.objects.select_for_update(of=("self",))
                .select_related("previous_version")
                .get(model_id=model_id)
            )
            previous = state.previous_version
            if previous is None or state.previous_retire_at is None or state.previous_retire_at > now:
                continue  # promoted again or retired by another tick meanwhile
            # A version serving again (e.g. rolled out anew) is not retired.
            if previous.status == ModelVersion.Status.DEPLOYED and previous.pk != state.stable_version_id:
                _retire(previous, actor=None, reason="kept for rollback long enough")
                retired.append(previous)
            state.previous_version = None
            state.previous_retire_at = None
            state.save(update_fields=["previous_version", "previous_retire_at", "updated_at"])
            _after_commit_invalidate(model_id)
    return retired


# --- feedback on predictions ------------------------------------------------------------


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
    rows = PredictionLog.objects.select_related("version").filter(
        model_id=model.pk, prediction_id__in=ids, shadow=False
    )
    return {row.prediction_id: row for row in rows}


def feedback_record(*, actor, model: RegisteredModel, items: list[dict]) -> dict:
    """Store the true labels of earlier predictions, all or none."""
    try:
        if not (actor is not None and actor.is_authenticated and has_standing(actor)):
            raise NotPermitted("You have no role that may send feedback on predictions.")
        access = model.access_of(actor)
        if not access.read:
            raise NotFound(f"No model named {model.name!r}.")
        if not access.develop:
            raise NotPermitted(f"Only engineers of team {model.team} may send feedback on {model.name}'s predictions.")
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
        # No audit append here: the rows are observations, and the chain's lock
        # would serialize every sender. feedback_summarize audits them.
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
            # Live accuracy per minute: the aggregates of each labelled prediction's minute.
            aggregation.apply_tallies(
                aggregation.feedback_tallies(
                    [(f.prediction.version_id, f.prediction.created_at, f.correct) for f in feedback]
                )
            )
        correct = sum(1 for f in feedback if f.correct)
        return {"recorded": len(feedback), "correct": correct, "incorrect": len(feedback) - correct}
    except GlassboxError as exc:
        record_refusal(actor=actor, action=AuditAction.FEEDBACK_RECORD, reason=exc.message, obj=model)
        raise


def feedback_summarize(*, now: datetime | None = None) -> list:
    """Fold the feedback stored since the last run into audited summaries:
    one `feedback.summary` event per sender and model (items, correct, per
    version, first and last time), written in the same transaction that marks
    the rows summarized, so each row is in exactly one summary. Rows another
    run holds are skipped (it summarizes them); rows committed meanwhile wait
    for the next run. Returns the events recorded."""
    events = []
    while True:
        with transaction.atomic():
            stamp = now or timezone.now()
            ids = list(
                Feedback.objects.select_for_update(skip_locked=True)
                .filter(summarized_at__isnull=True)
                .order_by("id")
                .values_list("id", flat=True)[:FEEDBACK_SUMMARY_BATCH]
            )
            if not ids:
                return events
            groups = (
                Feedback.objects.filter(id__in=ids)
                .values("created_by_id", "prediction__model_id", "prediction__version__number")
                .annotate(
                    items=Count("id"),
                    correct=Count("id", filter=Q(correct=True)),
                    first=Min("created_at"),
                    last=Max("created_at"),
                )
                .order_by("prediction__model_id", "created_by_id", "prediction__version__number")
            )
            summaries: dict[tuple[int, int], dict] = {}
            for group in groups:
                key = (group["prediction__model_id"], group["created_by_id"])
                summary = summaries.setdefault(key, {"items": 0, "correct": 0, "by_version": {}, "times": []})
                summary["items"] += group["items"]
                summary["correct"] += group["correct"]
                summary["by_version"][str(group["prediction__version__number"])] = group["items"]
                summary["times"] += [group["first"], group["last"]]
            Feedback.objects.filter(id__in=ids).update(summarized_at=stamp)
            models_by_id = RegisteredModel.objects.in_bulk({model_id for model_id, _ in summaries})
            users_by_id = get_user_model().objects.in_bulk({user_id for _, user_id in summaries})
            for (model_id, user_id), summary in summaries.items():
                events.append(
                    record_event(
                        actor=users_by_id[user_id],
                        action=AuditAction.FEEDBACK_SUMMARY,
                        obj=models_by_id[model_id],
                        detail={
                            "items": summary["items"],
                            "correct": summary["correct"],
                            "by_version": summary["by_version"],
                            "first_at": min(summary["times"]).isoformat(),
                            "last_at": max(summary["times"]).isoformat(),
                            "summarized_at": stamp.isoformat(),
                        },
                    )
                )
        if len(ids) < FEEDBACK_SUMMARY_BATCH:
            return events


# --- monitoring alerts (actor None: the platform) ---------------------------------------


def _alert_message(measurement: dict, window: dict, window_seconds: int) -> str:
    word = "above the maximum" if measurement["comparison"] == "max" else "below the minimum"
    value = f"{measurement['value']:.4g}"
    if measurement.get("observed") is not None:
        value += f" (distance {measurement['observed']:.3g} minus {measurement['sampling_distance']:.3g} expected by sampling)"
    return (
        f"{measurement['metric']} {value} is {word} {measurement['threshold']:.4g} "
        f"over the last {window_seconds} s ({window['requests']} requests)."
    )[:500]


def monitor_check(*, now: datetime | None = None) -> list[Alert]:
    """One monitoring pass; returns the alerts it raised or cleared. Safe to
    run twice at once: each version's alerts change under that version's row
    lock, so a second pass sees the first one's alerts and does nothing."""
    now = now or timezone.now()
    window_seconds = settings.GLASSBOX_MONITOR_INTERVAL_SECONDS
    since = now - timedelta(seconds=window_seconds)
    changed: list[Alert] = []
    deployed = ModelVersion.objects.filter(status=ModelVersion.Status.DEPLOYED).select_related("model").order_by("pk")
    for version in deployed:
        if not PredictionLog.objects.filter(version=version, created_at__gte=since, created_at__lt=now).exists():
            continue  # nothing served: nothing to judge, alerts stay as they are
        window = selectors.version_window(version=version, since=since, until=now)
        measurements = selectors.version_measurements(version, window)
        changed += _apply_measurements(version, window, measurements, now=now, window_seconds=window_seconds)
    # A version that stopped serving (retired, rolled back) no longer has live values to alert on.
    # (The archive alert is about stored rows, not live values: the retention task clears it.)
    stale = (
        Alert.objects.filter(cleared_at__isnull=True)
        .exclude(version__status=ModelVersion.Status.DEPLOYED)
        .exclude(metric=Alert.ARTIFACT_INTEGRITY)
        .exclude(metric=Alert.PREDICTION_ARCHIVE_FAILED)
    )
    for version_id in sorted(set(stale.values_list("version_id", flat=True))):
        changed += _clear_stale(version_id, now=now)
    return changed


@transaction.atomic
def _apply_measurements(
    version: ModelVersion, window: dict, measurements: list[dict], *, now: datetime, window_seconds: int
) -> list[Alert]:
    ModelVersion.objects.select_for_update().filter(pk=version.pk).first()
    open_by_metric = {
        alert.metric: alert
        for alert in Alert.objects.select_for_update().filter(version=version, cleared_at__isnull=True)
    }
    changed = []
    detail_window = {
        "since": (now - timedelta(seconds=window_seconds)).isoformat(),
        "until": now.isoformat(),
        "requests": window["requests"],
    }
    for measurement in measurements:
        metric, breached = measurement["metric"], measurement["breached"]
        alert = open_by_metric.get(metric)
        if breached and alert is None:
            alert = Alert.objects.create(
                model=version.model,
                version=version,
                metric=metric,
                value=measurement["value"],
                threshold=measurement["threshold"],
                message=_alert_message(measurement, window, window_seconds),
                raised_at=now,
            )
            record_event(
                actor=None,
                action=AuditAction.MONITOR_ALERT_RAISED,
                obj=alert,
                detail={**measurement, "window": detail_window},
            )
            changed.append(alert)
        elif breached is False and alert is not None:
            alert.cleared_at = now
            alert.save(update_fields=["cleared_at"])
            record_event(
                actor=None,
                action=AuditAction.MONITOR_ALERT_CLEARED,
                obj=alert,
                detail={**measurement, "window": detail_window},
            )
            changed.append(alert)
    return changed


@transaction.atomic
def _clear_stale(version_id: int, *, now: datetime) -> list[Alert]:
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    if version.status == ModelVersion.Status.DEPLOYED:
        return []  # redeployed meanwhile: the next pass judges it
    cleared = []
    open_alerts = Alert.objects.select_for_update().filter(version_id=version_id, cleared_at__isnull=True)
    for alert in open_alerts.exclude(metric=Alert.ARTIFACT_INTEGRITY):
        alert.cleared_at = now
        alert.save(update_fields=["cleared_at"])
        record_event(
            actor=None,
            action=AuditAction.MONITOR_ALERT_CLEARED,
            obj=alert,
            detail={"reason": f"the version is {version.status}, no longer serving"},
        )
        cleared.append(alert)
    return cleared


# --- certification alerts (actor None: the platform) -------------------------------------


def certification_check(*, today: date | None = None) -> list[Alert]:
    """Raise the alerts of deployed versions whose certification lapsed or was
    rejected, and clear those of versions re-certified since (the beat task,
    and safe to run at any time: each version is settled under its row lock,
    so a second run finds the alerts open and changes nothing)."""
    today = today or timezone.now().date()
    deployed = ModelVersion.objects.filter(status=ModelVersion.Status.DEPLOYED)
    lapsed = deployed.filter(recertify_by__lt=today).values_list("pk", flat=True)
    refused = versions_with_refused_certification().filter(status=ModelVersion.Status.DEPLOYED)
    with_alerts = Alert.objects.filter(cleared_at__isnull=True, metric__in=Alert.CERTIFICATION_METRICS)
    version_ids = (
        set(lapsed) | set(refused.values_list("pk", flat=True)) | set(with_alerts.values_list("version_id", flat=True))
    )
    changed: list[Alert] = []
    for version_id in sorted(version_ids):
        changed += certification_alerts_sync(version_id=version_id, today=today)
    return changed


def _certification_alerts_wanted(version: ModelVersion, *, today: date) -> dict[str, tuple[str, float, str]]:
    """metric -> (severity, value, message) of the certification alerts a version should have open."""
    if version.status != ModelVersion.Status.DEPLOYED:
        return {}  # only what serves is alerted on; an approved one is simply refused a rollout
    state = certification_state(version, today=today)
    if state.refused_round is not None:
        refused = state.refused_round
        return {
            Alert.CERTIFICATION_REFUSED: (
                Alert.Severity.CRITICAL,
                1.0,
                (
                    f"{version} is serving although its re-certification was rejected (review #{refused.pk}, "
                    f"{refused.closed_at:%Y-%m-%d}): roll back to the previous version or roll out a replacement. "
                    "Glassbox keeps serving it until someone does."
                )[:500],
            )
        }
    if state.lapsed_since is not None:
        days = (today - state.recertify_by).days
        return {
            Alert.CERTIFICATION_LAPSED: (
                Alert.Severity.WARNING,
                float(days),
                (
                    f"{version} is serving past its re-certification date {state.recertify_by:%Y-%m-%d} "
                    f"(lapsed since {state.lapsed_since:%Y-%m-%d}, {days} day(s)): open a re-certification round."
                )[:500],
            )
        }
    return {}


@transaction.atomic
def certification_alerts_sync(*, version_id: int, today: date | None = None) -> list[Alert]:
    """Make one version's open certification alerts what its certification
    says: raise the missing one, clear the ones that no longer apply."""
    now = timezone.now()
    today = today or now.date()
    version = ModelVersion.objects.select_for_update(of=("self",)).select_related("model").get(pk=version_id)
    wanted = _certification_alerts_wanted(version, today=today)
    open_alerts = {
        alert.metric: alert
        for alert in Alert.objects.select_for_update().filter(
            version=version, cleared_at__isnull=True, metric__in=Alert.CERTIFICATION_METRICS
        )
    }
    changed = []
    for metric, (severity, value, message) in wanted.items():
        if metric in open_alerts:
            continue
        alert = Alert.objects.create(
            model=version.model,
            version=version,
            metric=metric,
            severity=severity,
            value=value,
            threshold=0.0,
            message=message,
            raised_at=now,
        )
        record_event(
            actor=None,
            action=AuditAction.MONITOR_ALERT_RAISED,
            obj=alert,
            detail={"metric": metric, "severity": severity, "value": value, "recertify_by": version.recertify_by},
        )
        changed.append(alert)
    for metric, alert in open_alerts.items():
        if metric in wanted:
            continue
        alert.cleared_at = now
        alert.save(update_fields=["cleared_at"])
        record_event(
            actor=None,
            action=AuditAction.MONITOR_ALERT_CLEARED,
            obj=alert,
            detail={"metric": metric, "reason": "certification holds again", "recertify_by": version.recertify_by},
        )
        changed.append(alert)
    return changed


# --- artifact integrity alerts (registry.signals; actor None: the platform) ----------


@transaction.atomic
def artifact_integrity_alerts_raise(*, sha256: str, key: str, found: str) -> list[Alert]:
    """A critical alert on every version registered under `sha256` whose
    stored artifact was refused by digest (one open alert per version)."""
    now = timezone.now()
    raised = []
    for version in (
        ModelVersion.objects.select_for_update(of=("self",)).select_related("model").filter(artifact_sha256=sha256)
    ):
        if Alert.objects.filter(version=version, metric=Alert.ARTIFACT_INTEGRITY, cleared_at__isnull=True).exists():
            continue
        alert = Alert.objects.create(
            model=version.model,
            version=version,
            metric=Alert.ARTIFACT_INTEGRITY,
            severity=Alert.Severity.CRITICAL,
            value=1.0,
            threshold=0.0,
            message=(
                f"The stored artifact of {version} ({key}) has SHA-256 {found[:16]}…, not the registered "
                f"{sha256[:16]}…: Glassbox refuses to load it. Restore the object from a backup."
            )[:500],
            raised_at=now,
        )
        record_event(
            actor=None,
            action=AuditAction.MONITOR_ALERT_RAISED,
            obj=alert,
            detail={"metric": Alert.ARTIFACT_INTEGRITY, "key": key, "registered_sha256": sha256, "found_sha256": found},
        )
        raised.append(alert)
    return raised


def artifact_integrity_alerts_clear(*, sha256: str, key: str) -> list[Alert]:
    """A fetch of the artifact verified again: its open integrity alerts clear."""
    open_alerts = Alert.objects.filter(
        version__artifact_sha256=sha256, metric=Alert.ARTIFACT_INTEGRITY, cleared_at__isnull=True
    )
    if not open_alerts.exists():
        return []  # the usual case: one cheap query per first fetch
    now = timezone.now()
    cleared = []
    with transaction.atomic():
        for alert in open_alerts.select_for_update():
            alert.cleared_at = now
            alert.save(update_fields=["cleared_at"])
            record_event(
                actor=None,
                action=AuditAction.MONITOR_ALERT_CLEARED,
                obj=alert,
                detail={"metric": Alert.ARTIFACT_INTEGRITY, "key": key, "reason": "the artifact verified again"},
            )
            cleared.append(alert)
    return cleared


# --- prediction archive alert (actor None: the platform; rollouts/retention.py) ----------


def _alert_version(model: RegisteredModel) -> ModelVersion | None:
    """The version an alert about a whole model is shown on: the one serving, else the latest."""
    state = ServingState.objects.filter(model=model).first()
    if state is not None and state.stable_version_id is not None:
        return state.stable_version
    return model.versions.order_by("-number").first()


@transaction.atomic
def prediction_archive_alert_raise(*, model: RegisteredModel, reason: str, days_waiting: int, now: datetime):
    """Expired prediction logs of `model` could not be archived (so none
    were deleted): one open critical alert per model until a run succeeds."""
    version = _alert_version(model)
    if version is None:
        return None
    ModelVersion.objects.select_for_update().filter(pk=version.pk).first()
    if Alert.objects.filter(model=model, metric=Alert.PREDICTION_ARCHIVE_FAILED, cleared_at__isnull=True).exists():
        return None  # already said; the next successful run clears it
    alert = Alert.objects.create(
        model=model,
        version=version,
        metric=Alert.PREDICTION_ARCHIVE_FAILED,
        severity=Alert.Severity.CRITICAL,
        value=days_waiting,
        threshold=0,
        message=(f"Expired prediction logs of {model.name} could not be archived, so none were deleted: {reason}")[
            :500
        ],
        raised_at=now,
    )
    record_event(
        actor=None, action=AuditAction.MONITOR_ALERT_RAISED, obj=alert, detail={"reason": reason, "days": days_waiting}
    )
    return alert


@transaction.atomic
def prediction_archive_alert_clear(*, model: RegisteredModel, now: datetime) -> list[Alert]:
    cleared = []
    for alert in Alert.objects.select_for_update().filter(
        model=model, metric=Alert.PREDICTION_ARCHIVE_FAILED, cleared_at__isnull=True
    ):
        alert.cleared_at = now
        alert.save(update_fields=["cleared_at"])
        record_event(
            actor=None,
            action=AuditAction.MONITOR_ALERT_CLEARED,
            obj=alert,
            detail={"reason": "the expired prediction logs were archived"},
        )
        cleared.append(alert)
    return cleared
