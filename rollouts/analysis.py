"""Rollout analysis: what a window of served traffic says about a candidate.

Each interval, `rollout_analyse` measures the candidate against the stable
version (and its reference dataset) over the traffic since the last
analysis, gives each measurement a verdict and acts on the overall one with
Argo Rollouts' semantics (rollouts.services.rollout_record_analysis):

- successful: within its threshold;
- failed: past its threshold (enough failures abort the rollout);
- inconclusive: too little data to say (the rollout pauses; never a pass);
- not_measured: a measurement that cannot be taken fairly here, with its
  `reason` stored on the run (input drift when the candidate has no reference
  dataset; latency during a shadow step). It neither passes nor blocks.

Measurements: candidate error rate; p95 latency ratio candidate/stable (live
traffic only, see below); Jensen-Shannon distance of predicted-label shares
candidate vs stable; during a shadow step, agreement of the candidate's
mirrored answers with the live ones; input drift of the candidate's inputs
vs its reference.

The stable baseline is the window's stable traffic; when the window holds
too little of it (the 100 % step sends the stable nothing) it falls back to
the stable's traffic since the rollout began (for latency: since its first
live step).

Latency is compared only between calls timed the same way. Mirrored calls
run in a background pool after the live answer, competing with the next live
calls for the same cores, so a candidate with the stable's very weights
looked three times slower there: a shadow step does not measure latency, and
its stable traffic is no latency baseline either. The first live step (the
candidate answering real calls on the request path, like the stable) is
where a slow candidate fails.

A p95 from a window's few dozen calls is noisy: on a busy CI machine a
candidate with the stable's very weights measured 20.9 ms in one window and
36.0 ms (against the stable's 23.1 ms) two windows later. So a p95 ratio over its
limit fails only when the candidate's calls are also significantly slower
than the stable's as a whole (one-sided Mann-Whitney U on per-call
latencies, p < LATENCY_SIGNIFICANCE), the test Netflix's Kayenta applies to
canary metrics. A candidate that is truly slower is slower on most calls and
fails; a few unlucky calls are noise and pass, with the figures on the run.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import connection
from django.db.models import Aggregate, Avg, Count, F, FloatField, OuterRef, Q, Subquery
from django.utils import timezone

from rollouts.aggregation import percentile
from rollouts.drift import js_distance, measure_drift
from rollouts.models import DEFAULT_THRESHOLDS, AnalysisRun, Feedback, PredictionLog, Rollout, VersionReference
from rollouts.prediction_log import flush_prediction_logs
from rollouts.selectors import version_known_characters

logger = logging.getLogger(__name__)

# Newest input texts a window keeps for drift: bounded work per analysis.
SAMPLE_TEXTS = 2000
# Newest calls whose latencies a window keeps for the significance test.
SAMPLE_CALLS = 5000
# One-sided Mann-Whitney U level below which a p95 ratio over its limit fails.
# Strict, because a false abort throws a good rollout away while a slow
# candidate missed at a 5 % step (one call a window says little) is caught at
# the next, larger step: one call slower than every stable call is evidence
# only against 100 stable calls or more (exact p = 1 / (stable calls + 1)).
LATENCY_SIGNIFICANCE = 0.01


class _Percentile(Aggregate):
    """PostgreSQL's percentile_cont (interpolated, like numpy's default)."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)


def _percentiles(rows, fractions=(0.5, 0.95, 0.99)) -> dict[str, float | None]:
    names = [f"p{round(f * 100)}" for f in fractions]
    if connection.vendor == "postgresql":
        values = rows.aggregate(**{name: _Percentile("latency_ms", f) for name, f in zip(names, fractions)})
        return {name: values[name] for name in names}
    # The embedded demo (SQLite) has no percentile_cont.
    latencies = sorted(rows.values_list("latency_ms", flat=True))
    return {name: percentile(latencies, f) for name, f in zip(names, fractions)}


def window_stats(
    *, version, since: datetime, until: datetime, rollout: Rollout | None = None, routes: list[str] | None = None
) -> dict:
    """What a version served in (since, until]: requests, errors, latency
    percentiles (of answered requests), label shares, mean confidence, live
    accuracy from feedback, shadow agreement (for mirrored rows) and a
    bounded sample of the inputs (newest first) for drift."""
    rows = PredictionLog.objects.filter(version=version, created_at__gt=since, created_at__lte=until)
    if rollout is not None:
        rows = rows.filter(rollout=rollout)
    if routes:
        rows = rows.filter(route__in=routes)
    answered = rows.filter(error="")
    totals = rows.aggregate(requests=Count("pk"), errors=Count("pk", filter=~Q(error="")))
    requests, errors = totals["requests"], totals["errors"]
    labels = dict(answered.order_by().values("label").annotate(n=Count("pk")).values_list("label", "n"))
    answered_count = sum(labels.values())
    feedback = Feedback.objects.filter(prediction__in=rows.values("pk")).aggregate(
        n=Count("pk"), correct=Count("pk", filter=Q(correct=True))
    )
    live_label = PredictionLog.objects.filter(prediction_id=OuterRef("mirror_of"), error="").values("label")[:1]
    pairs = (
        answered.filter(mirror_of__isnull=False)
        .annotate(live_label=Subquery(live_label))
        .filter(live_label__isnull=False)
        .aggregate(n=Count("pk"), agree=Count("pk", filter=Q(label=F("live_label"))))
    )
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "answered": answered_count,
        "latency_ms": _percentiles(answered),
        "labels": {label: n / answered_count for label, n in sorted(labels.items())} if answered_count else {},
        "mean_confidence": answered.aggregate(mean=Avg("confidence"))["mean"],
        "feedback": feedback["n"],
        "accuracy": feedback["correct"] / feedback["n"] if feedback["n"] else None,
        "shadow_pairs": pairs["n"],
        "shadow_agreement": pairs["agree"] / pairs["n"] if pairs["n"] else None,
        "texts": list(rows.order_by("-created_at").values_list("input_text", flat=True)[:SAMPLE_TEXTS]),
        "call_latencies": _call_latencies(answered),
    }


def _call_latencies(answered) -> list[float]:
    """One latency per call, newest first: a call's rows share its time and
    its batch's latency, so counting rows would weigh a 20-input call as 20
    observations of one timing."""
    calls = answered.order_by("-created_at").values_list("created_at", "latency_ms").distinct()
    return [latency for _, latency in calls[:SAMPLE_CALLS]]


SHADOW_LATENCY_REASON = (
    "mirrored calls are timed in a background pool that competes with live calls for the same cores; "
    "latency is compared on live traffic only (from the first live step)"
)


def _measurement(name, value, threshold, comparison, verdict, detail="", **extra) -> dict:
    return {
        "name": name,
        "value": None if value is None else round(float(value), 6),
        "threshold": threshold,
        "comparison": comparison,
        "verdict": verdict,
        "detail": detail,
        **extra,
    }


def _not_measured(name, threshold, comparison, reason: str) -> dict:
    """A measurement deliberately not taken, saying why (shown on the run)."""
    return _measurement(name, None, threshold, comparison, "not_measured", reason, reason=reason)


def _judge(name, value, threshold, comparison, **extra) -> dict:
    passed = value <= threshold if comparison == "<=" else value >= threshold
    return _measurement(name, value, threshold, comparison, "successful" if passed else "failed", **extra)


def measure(rollout: Rollout, *, since: datetime, until: datetime) -> list[dict]:
    thresholds = {**DEFAULT_THRESHOLDS, **rollout.thresholds}
    min_requests = int(thresholds["min_requests"])
    shadow = bool(rollout.step.get("shadow"))
    candidate = window_stats(
        version=rollout.candidate, since=since, until=until, routes=["shadow"] if shadow else ["candidate"]
    )
    stable = window_stats(version=rollout.stable, since=since, until=until, routes=["stable"])
    baseline_note = "stable in this window"
    fell_back = stable["answered"] < min_requests
    if fell_back:
        stable = window_stats(version=rollout.stable, since=rollout.created_at, until=until, routes=["stable"])
        baseline_note = "stable since the rollout began (too little stable traffic in this window)"
    few_candidate = f"{candidate['requests']} candidate requests < min_requests {min_requests}"
    few_answered = (
        f"{candidate['answered']} answered candidate requests and {stable['answered']} stable "
        f"< min_requests {min_requests}"
    )
    enough_answers = candidate["answered"] >= min_requests and stable["answered"] >= min_requests
    results = []

    limit = thresholds["max_error_rate"]
    if candidate["requests"] < min_requests:
        results.append(_measurement("error_rate", candidate["error_rate"], limit, "<=", "inconclusive", few_candidate))
    else:
        results.append(
            _judge(
                "error_rate",
                candidate["error_rate"],
                limit,
                "<=",
                detail=f"{candidate['errors']} errors in {candidate['requests']} requests",
            )
        )

    if shadow:
        results.append(
            _not_measured("latency_p95_ratio", thresholds["max_latency_p95_ratio"], "<=", SHADOW_LATENCY_REASON)
        )
    elif fell_back:
        # Not "since the rollout began": a shadow step's stable calls competed with the mirror pool.
        live_stable = window_stats(version=rollout.stable, since=_live_since(rollout), until=until, routes=["stable"])
        note = "stable since the first live step (too little stable traffic in this window)"
        results.append(_latency(candidate, live_stable, note, thresholds))
    else:
        results.append(_latency(candidate, stable, baseline_note, thresholds))

    limit = thresholds["max_label_divergence"]
    if not enough_answers:
        results.append(_measurement("label_divergence", None, limit, "<=", "inconclusive", few_answered))
    else:
        results.append(
            _judge(
                "label_divergence",
                js_distance(candidate["labels"], stable["labels"]),
                limit,
                "<=",
                detail=f"candidate {candidate['labels']} vs stable {stable['labels']} ({baseline_note})",
            )
        )

    if shadow:
        limit = thresholds["min_shadow_agreement"]
        if candidate["shadow_pairs"] < min_requests:
            detail = f"{candidate['shadow_pairs']} mirrored pairs < min_requests {min_requests}"
            results.append(
                _measurement("shadow_agreement", candidate["shadow_agreement"], limit, ">=", "inconclusive", detail)
            )
        else:
            results.append(
                _judge(
                    "shadow_agreement",
                    candidate["shadow_agreement"],
                    limit,
                    ">=",
                    detail=f"{candidate['shadow_pairs']} mirrored pairs",
                )
            )

    results.append(_drift(rollout, candidate["texts"], thresholds, min_requests))
    return results


def _live_since(rollout: Rollout) -> datetime:
    """When the rollout's first live step began: after a shadow step, the
    end of the analysis that advanced past it."""
    if not rollout.steps or not rollout.steps[0].get("shadow"):
        return rollout.created_at
    advanced = (
        AnalysisRun.objects.filter(rollout=rollout, step_index=0, action="advanced")
        .order_by("window_end")
        .values_list("window_end", flat=True)
        .first()
    )
    return advanced or rollout.step_started_at


def _latency(candidate: dict, stable: dict, baseline_note: str, thresholds: dict) -> dict:
    """p95 of the candidate's live calls against the stable's: both answered
    on the request path, so both are timed the same way."""
    limit, min_requests = thresholds["max_latency_p95_ratio"], int(thresholds["min_requests"])
    if candidate["answered"] < min_requests or stable["answered"] < min_requests:
        detail = (
            f"{candidate['answered']} answered candidate requests and {stable['answered']} stable "
            f"< min_requests {min_requests}"
        )
        return _measurement("latency_p95_ratio", None, limit, "<=", "inconclusive", detail)
    candidate_p95, stable_p95 = candidate["latency_ms"]["p95"], stable["latency_ms"]["p95"]
    if not stable_p95:
        return _measurement("latency_p95_ratio", None, limit, "<=", "inconclusive", "stable p95 latency is 0 ms")
    ratio = candidate_p95 / stable_p95
    detail = f"p95 {candidate_p95:.2f} ms vs {stable_p95:.2f} ms ({baseline_note})"
    if ratio <= limit:
        return _judge("latency_p95_ratio", ratio, limit, "<=", detail=detail)
    calls, stable_calls = candidate["call_latencies"], stable["call_latencies"]
    p_value = slower_p_value(calls, stable_calls)
    significance = f"one-sided Mann-Whitney U p={p_value:.3g} over {len(calls)} vs {len(stable_calls)} calls"
    if p_value < LATENCY_SIGNIFICANCE:
        return _judge("latency_p95_ratio", ratio, limit, "<=", detail=f"{detail}; slower: {significance}")
    return _measurement(
        "latency_p95_ratio",
        ratio,
        limit,
        "<=",
        "successful",
        f"{detail}; over the limit but not significantly slower ({significance} >= {LATENCY_SIGNIFICANCE}): noise",
        p_value=round(p_value, 6),
    )


def slower_p_value(candidate: list[float], stable: list[float]) -> float:
    """How likely calls at least this much slower would be if the candidate
    were as fast as the stable (one-sided Mann-Whitney U). Exact for small
    samples, where the normal approximation misjudges the few calls a 5 %
    step gives the candidate; asymptotic for large ones."""
    from scipy.stats import mannwhitneyu

    if not candidate or not stable:
        return 1.0
    method = (
        "exact" if min(len(candidate), len(stable)) <= 30 and len(candidate) * len(stable) <= 20000 else "asymptotic"
    )
    return float(mannwhitneyu(candidate, stable, alternative="greater", method=method).pvalue)


def _drift(rollout: Rollout, texts: list[str], thresholds: dict, min_requests: int) -> dict:
    limit = thresholds["max_input_drift"]
    reference = VersionReference.objects.filter(version=rollout.candidate).first()
    if reference is None:
        return _not_measured(
            "input_drift", limit, "<=", "no reference dataset for the candidate (never counted as a pass)"
        )
    texts = [text for text in texts if text]
    if len(texts) < min_requests:
        return _measurement(
            "input_drift",
            None,
            limit,
            "<=",
            "inconclusive",
            f"{len(texts)} candidate inputs < min_requests {min_requests}",
        )
    drift = measure_drift(reference.profile, texts, version_known_characters(rollout.candidate))
    observed = drift["character_js_distance"]
    if observed is None:
        return _measurement("input_drift", None, limit, "<=", "inconclusive", "no characters to compare")
    chance, excess = drift["sampling_distance"], drift["character_js_excess"]
    detail = (
        f"character JS distance {observed:.3f} over {len(texts)} redacted inputs, {chance:.3f} expected "
        f"by sampling alone; reference {reference.dataset}"
    )
    return _judge(
        "input_drift",
        excess,
        limit,
        "<=",
        detail=detail,
        signals={
            "character_js_distance": observed,
            "sampling_distance": chance,
            "length_psi": drift["length_psi"],
            "unknown_rate_increase": drift["unknown_rate_increase"],
            "texts": len(texts),
            "redacted_inputs": drift["redacted_inputs"],
            "reference_redacted": drift["reference_redacted"],
        },
    )


def overall_verdict(measurements: list[dict]) -> str:
    verdicts = {m["verdict"] for m in measurements}
    if "failed" in verdicts:
        return AnalysisRun.Verdict.FAILED
    if "inconclusive" in verdicts:
        return AnalysisRun.Verdict.INCONCLUSIVE
    return AnalysisRun.Verdict.SUCCESSFUL


def rollout_analyse(*, rollout: Rollout, now: datetime | None = None) -> AnalysisRun | None:
    """Analyse the window since the last analysis and act on the verdict.
    None when there is nothing to do (not progressing, an empty window, or
    another tick analysed it first)."""
    from rollouts import services
    from rollouts.selectors import analysis_window_start

    now = now or timezone.now()
    flush_prediction_logs(timeout=10)  # this process's buffered predictions belong in the window
    rollout = Rollout.objects.select_related("model", "candidate", "stable").get(pk=rollout.pk)
    if rollout.status != Rollout.Status.PROGRESSING or rollout.stable is None:
        return None
    since = analysis_window_start(rollout)
    if now <= since:
        return None
    # Measured without locks (it reads many rows); the locked write below
    # checks that nobody acted on the rollout meanwhile.
    measurements = measure(rollout, since=since, until=now)
    return services.rollout_record_analysis(
        rollout=rollout,
        expected_last_analysis_at=rollout.last_analysis_at,
        expected_step=rollout.current_step,
        window_start=since,
        window_end=now,
        measurements=measurements,
        verdict=overall_verdict(measurements),
        now=now,
    )
