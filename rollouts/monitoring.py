"""How deployed versions behave live, and the alerts that say when they
misbehave.

`version_timeseries` aggregates a version's prediction logs into time
buckets: requests, errors, latency percentiles, predicted labels, confidence,
live accuracy (from feedback) and input drift against the version's
reference profile. PostgreSQL does the counting and the percentiles
(`date_bin`, `percentile_cont`); other databases (the SQLite demo) get the
same numbers from a Python pass over the rows. Percentiles interpolate
linearly between ranks, as `percentile_cont` does.

`monitor_check` is what the beat task runs: every deployed version with
traffic in the last GLASSBOX_MONITOR_INTERVAL_SECONDS is measured against
GLASSBOX_MONITOR_THRESHOLDS and GLASSBOX_DRIFT_THRESHOLDS; a value over its
bound opens an Alert (one open per version and metric), a value back within
bounds closes it, each with an AuditEvent whose actor is the platform.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from glassbox.errors import InvalidInput, NotPermitted
from governance.audit import record_event
from registry.models import ModelVersion, RegisteredModel
from rollouts.drift import measure_drift
from rollouts.models import Alert, Feedback, PredictionLog, VersionReference

logger = logging.getLogger(__name__)

# Windows the monitoring page offers: name -> (seconds, bucket seconds).
WINDOWS = {
    "1h": (3600, 60),
    "24h": (86400, 1800),
    "7d": (7 * 86400, 3 * 3600),
}
DEFAULT_WINDOW = "24h"
# Texts per bucket (and per whole window) that drift is measured on: enough
# for a stable character distribution, bounded so a busy hour stays cheap.
DRIFT_SAMPLE_PER_BUCKET = 200
DRIFT_SAMPLE_PER_WINDOW = 2000
PERCENTILES = (0.5, 0.95, 0.99)
# Drift signals a version is checked on (thresholds: GLASSBOX_DRIFT_THRESHOLDS).
DRIFT_SIGNALS = ("character_js_distance", "length_psi", "unknown_rate_increase")


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks: PostgreSQL's percentile_cont."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def _empty_bucket() -> dict:
    return {
        "requests": 0,
        "errors": 0,
        "latency": [None, None, None],
        "confidence_sum": 0.0,
        "confidence_n": 0,
        "labels": Counter(),
        "feedback": 0,
        "correct": 0,
        "texts": [],
    }


# --- aggregation: PostgreSQL ---------------------------------------------------------


def _raw_buckets_postgresql(
    version_id: int, since: datetime, until: datetime, stride: timedelta, text_sample: int
) -> dict[int, dict]:
    log_table = PredictionLog._meta.db_table
    feedback_table = Feedback._meta.db_table
    where = "version_id = %s AND created_at >= %s AND created_at < %s"
    bucket = "date_bin(%s::interval, created_at, %s::timestamptz)"
    # Parameter order: the bucket expression's two, then the WHERE clause's three.
    params = [stride, since, version_id, since, until]
    buckets: dict[int, dict] = defaultdict(_empty_bucket)

    def index(start: datetime) -> int:
        return int((start - since) / stride)

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {bucket} AS b, count(*), count(*) FILTER (WHERE error <> ''),"
            " percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms),"
            " sum(confidence) FILTER (WHERE error = '' AND confidence IS NOT NULL),"
            " count(confidence) FILTER (WHERE error = '')"
            f" FROM {log_table} WHERE {where} GROUP BY b",
            params,
        )
        for start, requests, errors, latency, confidence_sum, confidence_n in cursor.fetchall():
            entry = buckets[index(start)]
            entry.update(
                requests=requests,
                errors=errors,
                latency=list(latency),
                confidence_sum=confidence_sum or 0.0,
                confidence_n=confidence_n,
            )
        cursor.execute(
            f"SELECT {bucket} AS b, label, count(*) FROM {log_table} WHERE {where} AND error = '' GROUP BY b, label",
            params,
        )
        for start, label, count in cursor.fetchall():
            buckets[index(start)]["labels"][label] = count
        cursor.execute(
            f"SELECT date_bin(%s::interval, p.created_at, %s::timestamptz) AS b, count(*), count(*) FILTER (WHERE f.correct)"
            f" FROM {log_table} p JOIN {feedback_table} f ON f.prediction_id = p.id"
            " WHERE p.version_id = %s AND p.created_at >= %s AND p.created_at < %s GROUP BY b",
            params,
        )
        for start, feedback, correct in cursor.fetchall():
            buckets[index(start)].update(feedback=feedback, correct=correct)
        if text_sample:
            # The newest texts of each bucket, at most text_sample of them.
            cursor.execute(
                f"SELECT b, input_text FROM (SELECT {bucket} AS b, input_text,"
                f" row_number() OVER (PARTITION BY {bucket} ORDER BY id DESC) AS n"
                f" FROM {log_table} WHERE {where} AND input_text <> '') sample WHERE n <= %s",
                [stride, since, stride, since, version_id, since, until, text_sample],
            )
            for start, text in cursor.fetchall():
                buckets[index(start)]["texts"].append(text)
    return buckets


# --- aggregation: any database (the SQLite demo) -------------------------------------


def _raw_buckets_python(
    version_id: int, since: datetime, until: datetime, stride: timedelta, text_sample: int
) -> dict[int, dict]:
    rows = (
        PredictionLog.objects.filter(version_id=version_id, created_at__gte=since, created_at__lt=until)
        .order_by("-id")
        .values_list("created_at", "latency_ms", "error", "label", "confidence", "input_text", "feedback__correct")
    )
    buckets: dict[int, dict] = defaultdict(_empty_bucket)
    latencies: dict[int, list[float]] = defaultdict(list)
    for created_at, latency_ms, error, label, confidence, input_text, correct in rows.iterator(chunk_size=2000):
        key = int((created_at - since) / stride)
        entry = buckets[key]
        entry["requests"] += 1
        latencies[key].append(latency_ms)
        if error:
            entry["errors"] += 1
        else:
            entry["labels"][label] += 1
            if confidence is not None:
                entry["confidence_sum"] += confidence
                entry["confidence_n"] += 1
        if correct is not None:
            entry["feedback"] += 1
            entry["correct"] += int(correct)
        if input_text and len(entry["texts"]) < text_sample:
            entry["texts"].append(input_text)
    for key, values in latencies.items():
        values.sort()
        buckets[key]["latency"] = [percentile(values, fraction) for fraction in PERCENTILES]
    return buckets


# --- drift ---------------------------------------------------------------------------------


class DriftReference:
    """A version's reference profile and the characters its model knows,
    looked up once per monitoring pass."""

    def __init__(self, version: ModelVersion):
        reference = VersionReference.objects.filter(version=version).select_related("dataset").first()
        self.profile = reference.profile if reference is not None else None
        self.dataset = reference.dataset if reference is not None else None
        self.known_characters = None
        if self.profile is not None and self.profile.get("unknown_rate") is not None:
            self.known_characters = _known_characters(version)

    def measure(self, texts: list[str]) -> dict | None:
        """The drift signals of `texts`, with the character distance that
        sampling alone explains and the excess over it (what alerts judge;
        see rollouts.drift.measure_drift)."""
        if self.profile is None or not texts:
            return None
        return measure_drift(self.profile, texts, self.known_characters)


def _known_characters(version: ModelVersion) -> frozenset[str] | None:
    from registry.selectors import version_predictor

    try:
        return version_predictor(version).known_characters()
    except Exception:  # an artifact that cannot load here: the unknown-rate signal is left out, not the page
        logger.warning("drift: could not load %s for its known characters", version, exc_info=True)
        return None


# --- reads -----------------------------------------------------------------------------------


def _finish(raw: dict, drift: dict | None) -> dict:
    requests, errors = raw["requests"], raw["errors"]
    p50, p95, p99 = raw["latency"]
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "latency_p50": p50,
        "latency_p95": p95,
        "latency_p99": p99,
        "labels": dict(sorted(raw["labels"].items())),
        "mean_confidence": raw["confidence_sum"] / raw["confidence_n"] if raw["confidence_n"] else None,
        "feedback": raw["feedback"],
        "correct": raw["correct"],
        "live_accuracy": raw["correct"] / raw["feedback"] if raw["feedback"] else None,
        "drift": drift,
    }


def _raw_buckets(version_id: int, since: datetime, until: datetime, stride: timedelta, text_sample: int):
    if connection.vendor == "postgresql":
        return _raw_buckets_postgresql(version_id, since, until, stride, text_sample)
    return _raw_buckets_python(version_id, since, until, stride, text_sample)


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
    if bucket_seconds <= 0 or until <= since:
        raise InvalidInput("A time series needs a positive bucket size and until after since.")
    stride = timedelta(seconds=bucket_seconds)
    count = math.ceil((until - since) / stride)
    reference = reference or DriftReference(version)
    sample = DRIFT_SAMPLE_PER_BUCKET if reference.profile is not None else 0
    raw = _raw_buckets(version.pk, since, until, stride, sample)
    series = []
    for index in range(count):
        start = since + index * stride
        entry = raw.get(index) or _empty_bucket()
        series.append(
            {"start": start, "end": min(start + stride, until), **_finish(entry, reference.measure(entry["texts"]))}
        )
    return series


def version_window(
    *, version: ModelVersion, since: datetime, until: datetime, reference: DriftReference | None = None
) -> dict:
    """The whole window as one bucket (drift on up to DRIFT_SAMPLE_PER_WINDOW texts)."""
    reference = reference or DriftReference(version)
    stride = until - since
    sample = DRIFT_SAMPLE_PER_WINDOW if reference.profile is not None else 0
    raw = _raw_buckets(version.pk, since, until, stride, sample).get(0) or _empty_bucket()
    return {"start": since, "end": until, **_finish(raw, reference.measure(raw["texts"]))}


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
    if not (user.is_authenticated and user.has_perm("rollouts.view_predictionlog")):
        raise NotPermitted("You have no role that may read a model's monitoring.")
    name, since, until, bucket = window_bounds(window, now=now)
    with_traffic = set(
        PredictionLog.objects.filter(model=model, created_at__gte=since, created_at__lt=until)
        .order_by()
        .values_list("version_id", flat=True)
        .distinct()
    )
    versions = model.versions.filter(Q(pk__in=with_traffic) | Q(status=ModelVersion.Status.DEPLOYED))
    open_alerts = list(Alert.objects.filter(model=model, cleared_at__isnull=True).select_related("version"))
    panels = []
    for version in versions.select_related("model").order_by("-number"):
        reference = DriftReference(version)
        totals = version_window(version=version, since=since, until=until, reference=reference)
        panels.append(
            {
                "version": version,
                "totals": totals,
                "measurements": version_measurements(version, totals),
                "series": version_timeseries(
                    version=version, since=since, until=until, bucket_seconds=bucket, reference=reference
                ),
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


def open_alerts(*, user):
    """Alerts not cleared yet, newest first (the dashboard's marks)."""
    if not (user.is_authenticated and user.has_perm("rollouts.view_alert")):
        return Alert.objects.none()
    return Alert.objects.filter(cleared_at__isnull=True).select_related("model", "version")


# --- alerts ----------------------------------------------------------------------------------


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
        window = version_window(version=version, since=since, until=now)
        measurements = version_measurements(version, window)
        changed += _apply_measurements(version, window, measurements, now=now, window_seconds=window_seconds)
    # A version that stopped serving (retired, rolled back) no longer has live values to alert on.
    stale = Alert.objects.filter(cleared_at__isnull=True).exclude(version__status=ModelVersion.Status.DEPLOYED)
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
                actor=None, action="monitor.alert_raised", obj=alert, detail={**measurement, "window": detail_window}
            )
            changed.append(alert)
        elif breached is False and alert is not None:
            alert.cleared_at = now
            alert.save(update_fields=["cleared_at"])
            record_event(
                actor=None, action="monitor.alert_cleared", obj=alert, detail={**measurement, "window": detail_window}
            )
            changed.append(alert)
    return changed


@transaction.atomic
def _clear_stale(version_id: int, *, now: datetime) -> list[Alert]:
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    if version.status == ModelVersion.Status.DEPLOYED:
        return []  # redeployed meanwhile: the next pass judges it
    cleared = []
    for alert in Alert.objects.select_for_update().filter(version_id=version_id, cleared_at__isnull=True):
        alert.cleared_at = now
        alert.save(update_fields=["cleared_at"])
        record_event(
            actor=None,
            action="monitor.alert_cleared",
            obj=alert,
            detail={"reason": f"the version is {version.status}, no longer serving"},
        )
        cleared.append(alert)
    return cleared
