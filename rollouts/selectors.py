"""Reads of rollouts, serving state and monitoring, for the API, the pages
and the workers.

Monitoring: `version_timeseries` and `version_window` sum a version's
per-minute and per-half-hour prediction aggregates (rollouts/aggregation.py;
raw log rows only for an unaligned window's partial minutes) into what the monitoring page
charts and what the monitor judges against GLASSBOX_MONITOR_THRESHOLDS and
GLASSBOX_DRIFT_THRESHOLDS (`version_measurements`); the alerts it raises
and clears are written by rollouts.services.monitor_check.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from glassbox.errors import InvalidInput, NotFound, NotPermitted
from governance.access import has_standing
from registry.models import ModelVersion, RegisteredModel
from rollouts.aggregation import (
    MINUTE,
    aggregate_buckets,
    histogram_percentile,
    merge,
    new_tally,
    period_start,
    tally_sketch,
)
from rollouts.drift import measure_sketch
from rollouts.models import Alert, AnalysisRun, PredictionAggregate, Rollout, ServingState, VersionReference

logger = logging.getLogger(__name__)


# Windows the monitoring page offers: name -> (seconds, bucket seconds).
WINDOWS = {
    "1h": (3600, 60),
    "24h": (86400, 1800),
    "7d": (7 * 86400, 3 * 3600),
}
DEFAULT_WINDOW = "24h"
# Drift signals a version is checked on (thresholds: GLASSBOX_DRIFT_THRESHOLDS).
DRIFT_SIGNALS = ("character_js_distance", "length_psi", "unknown_rate_increase")

_RELATED = ("model", "candidate", "stable", "created_by", "rolled_back_by")


def _require_read(user, model: RegisteredModel | None = None) -> None:
    if not has_standing(user):
        raise NotPermitted("You have no role that may read rollouts.")
    if model is not None and not model.can_be_viewed_by(user):
        raise NotFound(f"No model named {model.name!r}.")


def _rollouts(latest_runs: int) -> QuerySet[Rollout]:
    """Rollouts with their related rows; with `latest_runs`, each also
    carries its newest analysis runs as `.latest_runs` (one query for all)."""
    rollouts = Rollout.objects.select_related(*_RELATED)
    if latest_runs:
        runs = AnalysisRun.objects.order_by("-window_end", "-id")[:latest_runs]
        rollouts = rollouts.prefetch_related(Prefetch("analysis_runs", queryset=runs, to_attr="latest_runs"))
    return rollouts


def rollout_list(*, user, model: RegisteredModel, latest_runs: int = 0) -> QuerySet[Rollout]:
    _require_read(user, model)
    return _rollouts(latest_runs).filter(model=model).order_by("-created_at", "-id")


def rollout_get(*, user, pk: int, latest_runs: int = 0) -> Rollout:
    _require_read(user)
    rollout = _rollouts(latest_runs).filter(pk=pk).first()
    if rollout is None:
        raise NotFound(f"No rollout {pk}.")
    if not rollout.model.can_be_viewed_by(user):
        # Not revealed: the same answer as a rollout that does not exist.
        raise NotFound(f"No rollout {pk}.")
    return rollout


def analysis_runs(*, user, rollout: Rollout, limit: int | None = None) -> QuerySet[AnalysisRun]:
    """A rollout's analysis runs, newest first."""
    _require_read(user, rollout.model)
    runs = AnalysisRun.objects.filter(rollout=rollout).order_by("-window_end", "-id")
    return runs[:limit] if limit else runs


def active_rollout(model: RegisteredModel) -> Rollout | None:
    return Rollout.objects.select_related(*_RELATED).filter(model=model, status__in=Rollout.ACTIVE_STATUSES).first()


def rollout_history(version: ModelVersion) -> QuerySet[Rollout]:
    """Rollouts where the version was the candidate or the stable one."""
    return (
        Rollout.objects.filter(Q(candidate=version) | Q(stable=version))
        .select_related(*_RELATED)
        .order_by("-created_at", "-id")
    )


def analysis_verdict_counts(rollouts: list[Rollout]) -> dict[int, dict[str, int]]:
    """How many analysis runs judged each rollout which way: {rollout id: {verdict: count}}."""
    counts: dict[int, dict[str, int]] = {}
    runs = AnalysisRun.objects.filter(rollout__in=rollouts).order_by().values_list("rollout_id", "verdict")
    for rollout_id, verdict, count in runs.annotate(n=Count("id")):
        counts.setdefault(rollout_id, {})[verdict] = count
    return counts


def rollouts_active() -> QuerySet[Rollout]:
    """Rollouts still under way, across all models (the manager's dashboard)."""
    return Rollout.objects.filter(status__in=Rollout.ACTIVE_STATUSES).select_related("model", "candidate", "stable")


def alerts_open() -> QuerySet[Alert]:
    """Monitoring alerts not cleared yet, across all models (the manager's dashboard)."""
    # Critical ones first ("critical" sorts before "warning"), then the newest.
    return (
        Alert.objects.filter(cleared_at__isnull=True)
        .select_related("model", "version")
        .order_by("severity", "-raised_at", "-id")
    )


def serving_state(model: RegisteredModel) -> ServingState | None:
    return ServingState.objects.select_related("stable_version", "previous_version").filter(model=model).first()


def serving_summary(state: ServingState | None, active: Rollout | None) -> dict:
    """What serves a model now, as plain data: the rollback's answer (200)
    and the current state its refusal (409) carries."""
    stable = state.stable_version if state is not None else None
    previous = state.previous_version if state is not None else None
    retire_at = state.previous_retire_at if state is not None else None
    return {
        "stable": stable.number if stable is not None else None,
        "previous": previous.number if previous is not None else None,
        "previous_retire_at": retire_at.isoformat() if retire_at is not None else None,
        "active_rollout": active.pk if active is not None else None,
    }


def serving_get(*, user, model: RegisteredModel) -> dict:
    """The serving summary of a model for a reader of its rollouts."""
    _require_read(user, model)
    return {"model": model.name, **serving_summary(serving_state(model), active_rollout(model))}


def analysis_window_start(rollout: Rollout) -> datetime:
    """Where the next analysis window of a rollout begins: its last analysis,
    or the start (or restart, after a resume) of its current step."""
    return max(moment for moment in (rollout.last_analysis_at, rollout.step_started_at, rollout.created_at) if moment)


def rollout_is_due(rollout: Rollout, *, now: datetime) -> bool:
    if rollout.status != Rollout.Status.PROGRESSING:
        return False
    return now - analysis_window_start(rollout) >= timedelta(seconds=rollout.analysis_interval_seconds)


def rollouts_due_for_analysis(*, now: datetime) -> list[int]:
    """Progressing rollouts whose last analysis (or step start) is at least one interval old."""
    fields = ("pk", "status", "last_analysis_at", "step_started_at", "created_at", "analysis_interval_seconds")
    progressing = Rollout.objects.filter(status=Rollout.Status.PROGRESSING).only(*fields)
    return [rollout.pk for rollout in progressing if rollout_is_due(rollout, now=now)]


# --- monitoring ------------------------------------------------------------------------


class DriftReference:
    """A version's reference profile and the characters its model knows,
    looked up once per monitoring pass."""

    def __init__(self, version: ModelVersion):
        reference = VersionReference.objects.filter(version=version).select_related("dataset").first()
        self.profile = reference.profile if reference is not None else None
        self.dataset = reference.dataset if reference is not None else None
        self.known_characters = None
        if self.profile is not None and self.profile.get("unknown_rate") is not None:
            self.known_characters = version_known_characters(version)

    def measure(self, sketch: dict) -> dict | None:
        """The drift signals of the texts a sketch sums (every text of the
        period, not a sample), with the character distance that sampling
        alone explains and the excess over it (what alerts judge; see
        rollouts.drift.measure_sketch)."""
        if self.profile is None or not sketch["texts"]:
            return None
        return measure_sketch(self.profile, sketch, self.known_characters)


def version_known_characters(version: ModelVersion) -> frozenset[str] | None:
    """The characters a version's model has features for (the unknown-rate
    drift signal); None when its artifact cannot be loaded here: that signal
    is then left out, not the page or the analysis."""
    from registry.selectors import version_predictor

    try:
        return version_predictor(version).known_characters()
    except Exception:  # the artifact cannot load here (missing, corrupt, wrong flavor)
        logger.warning("drift: could not load %s for its known characters", version, exc_info=True)
        return None


def _finish(raw: dict, reference: DriftReference) -> dict:
    """A bucket's tally as the numbers the page and the monitor show; latency
    percentiles are estimated from its histogram (aggregation.histogram_percentile)."""
    requests, errors = raw["requests"], raw["errors"]
    p50, p95, p99 = (histogram_percentile(raw, fraction) for fraction in (0.5, 0.95, 0.99))
    correct, feedback = raw["correct"], raw["feedback"]
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "latency_p50": p50,
        "latency_p95": p95,
        "latency_p99": p99,
        "labels": dict(sorted(raw["labels"].items())),
        "mean_confidence": raw["confidence_sum"] / raw["confidence_count"] if raw["confidence_count"] else None,
        "feedback": feedback,
        "correct": correct,
        "live_accuracy": correct / feedback if feedback else None,
        "drift": reference.measure(tally_sketch(raw)),
    }


def version_timeseries(
    *,
    version: ModelVersion,
    since: datetime,
    until: datetime,
    bucket_seconds: int,
    reference: DriftReference | None = None,
) -> list[dict]:
    """One entry per bucket [start, end) from `since` to `until`, empty
    buckets included (a chart needs its gaps)."""
    return _series_and_window(version, since, until, bucket_seconds, reference or DriftReference(version))[0]


def _series_and_window(
    version: ModelVersion, since: datetime, until: datetime, bucket_seconds: int, reference: DriftReference
) -> tuple[list[dict], dict]:
    """The time series and the whole window's totals from one read of the
    aggregates (the window is the sum of its buckets)."""
    if bucket_seconds <= 0 or until <= since:
        raise InvalidInput("A time series needs a positive bucket size and until after since.")
    stride = timedelta(seconds=bucket_seconds)
    count = math.ceil((until - since) / stride)
    raw = aggregate_buckets(version.pk, since, until, stride, sketch=reference.profile is not None)
    series = []
    whole = new_tally()
    for index in range(count):
        start = since + index * stride
        entry = raw.get(index) or new_tally()
        series.append({"start": start, "end": min(start + stride, until), **_finish(entry, reference)})
        merge(whole, entry)
    return series, {"start": since, "end": until, **_finish(whole, reference)}


def version_window(
    *, version: ModelVersion, since: datetime, until: datetime, reference: DriftReference | None = None
) -> dict:
    """The whole window as one bucket."""
    reference = reference or DriftReference(version)
    raw = aggregate_buckets(version.pk, since, until, until - since, sketch=reference.profile is not None)
    return {"start": since, "end": until, **_finish(raw.get(0) or new_tally(), reference)}


def monitoring_thresholds() -> dict:
    return {**settings.GLASSBOX_MONITOR_THRESHOLDS}


def version_measurements(version: ModelVersion, window: dict) -> list[dict]:
    """Each monitored value of a window with its bound and whether it is
    breached; `value` None means too little data to judge (no verdict)."""
    limits = monitoring_thresholds()
    enough = window["requests"] >= limits["min_requests"]
    measurements = [
        _measure("error_rate", window["error_rate"] if enough else None, limits["max_error_rate"], "max"),
        _measure("latency_p95_ms", window["latency_p95"] if enough else None, limits["max_latency_p95_ms"], "max"),
    ]
    drift = window["drift"] or {}
    drift_enough = (drift.get("texts") or 0) >= limits["min_drift_texts"]
    for signal in DRIFT_SIGNALS:
        limit = settings.GLASSBOX_DRIFT_THRESHOLDS.get(signal)
        if limit is None:
            continue
        # The character distance is judged beyond what sampling explains (see DriftReference.measure).
        value = drift.get("character_js_excess" if signal == "character_js_distance" else signal)
        measurement = _measure(signal, value if drift_enough else None, limit, "max")
        if signal == "character_js_distance" and drift_enough:
            measurement.update(observed=drift.get(signal), sampling_distance=drift.get("sampling_distance"))
        measurements.append(measurement)
    floor = live_accuracy_floor(version, limits)
    if floor is not None:
        accuracy = window["live_accuracy"] if window["feedback"] >= limits["min_feedback"] else None
        measurements.append(_measure("live_accuracy", accuracy, floor, "min"))
    return measurements


def live_accuracy_floor(version: ModelVersion, limits: dict) -> float | None:
    """Live accuracy may sit at most `max_accuracy_drop` under the accuracy
    the version was approved with; without a recorded accuracy, the absolute
    `min_live_accuracy` applies (None: not checked)."""
    recorded = (version.metrics or {}).get("accuracy")
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and 0 <= recorded <= 1:
        return round(max(0.0, recorded - limits["max_accuracy_drop"]), 6)
    return limits.get("min_live_accuracy")


def _measure(metric: str, value: float | None, threshold: float, comparison: str) -> dict:
    if value is None:
        breached = None
    elif comparison == "max":
        breached = value > threshold
    else:
        breached = value < threshold
    return {"metric": metric, "value": value, "threshold": threshold, "comparison": comparison, "breached": breached}


def window_bounds(window: str | None, *, now: datetime | None = None) -> tuple[str, datetime, datetime, int]:
    """(window name, since, until, bucket seconds) for a page's window choice;
    an unknown choice falls back to the default rather than failing the page."""
    name = window if window in WINDOWS else DEFAULT_WINDOW
    seconds, bucket = WINDOWS[name]
    until = now or timezone.now()
    # Align to the bucket so the same request a minute later shows the same buckets.
    until = datetime.fromtimestamp(math.ceil(until.timestamp() / bucket) * bucket, tz=until.tzinfo)
    return name, until - timedelta(seconds=seconds), until, bucket


def model_monitoring(*, user, model: RegisteredModel, window: str | None = None, now: datetime | None = None) -> dict:
    """The monitoring page of a model: per version that is deployed or had
    traffic in the window, its window totals, measurements against the
    alert bounds, time series and open alerts."""
    if not has_standing(user):
        raise NotPermitted("You have no role that may read a model's monitoring.")
    if not model.can_be_viewed_by(user):
        raise NotFound(f"No model named {model.name!r}.")
    name, since, until, bucket = window_bounds(window, now=now)
    # Traffic in the window: one probe of each version's minute aggregates (page windows are whole minutes).
    with_traffic = PredictionAggregate.objects.filter(
        version=OuterRef("pk"),
        span_seconds=MINUTE,
        start__gte=period_start(since, MINUTE),
        start__lt=until,
        requests__gt=0,
    )
    versions = model.versions.filter(Q(Exists(with_traffic)) | Q(status=ModelVersion.Status.DEPLOYED))
    open_alerts = list(Alert.objects.filter(model=model, cleared_at__isnull=True).select_related("version"))
    panels = []
    for version in versions.select_related("model").order_by("-number"):
        reference = DriftReference(version)
        series, totals = _series_and_window(version, since, until, bucket, reference)
        panels.append(
            {
                "version": version,
                "totals": totals,
                "measurements": version_measurements(version, totals),
                "series": series,
                "reference": reference,
                "alerts": [alert for alert in open_alerts if alert.version_id == version.pk],
            }
        )
    return {
        "window": name,
        "windows": list(WINDOWS),
        "since": since,
        "until": until,
        "bucket_seconds": bucket,
        "panels": panels,
        "open_alerts": open_alerts,
    }
