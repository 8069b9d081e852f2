"""How a live step judges latency: a p95 ratio over its limit fails only
when the candidate's calls are significantly slower than the stable's
(one-sided Mann-Whitney U on per-call latencies); a few slow calls in a
window are noise. The rows are what the serving path logs: one call's
inputs share its time and its batch's latency."""

from datetime import timedelta

import pytest

from registry.models import ModelVersion
from rollouts import services
from rollouts.analysis import LATENCY_SIGNIFICANCE, measure, slower_p_value
from rollouts.models import PredictionLog
from rollouts.prediction_log import new_entry
from tests.conftest import ModelVersionFactory, RegisteredModelFactory
from tests.rollouts.rollout_helpers import deploy_first

INPUTS_PER_CALL = 20


@pytest.fixture
def live_rollout(engineer):
    """A rollout at a live 50 % step between two version rows (nothing is
    loaded: the test writes the traffic's log rows itself)."""
    model = RegisteredModelFactory(name="zh-latency", created_by=engineer)
    for _ in range(2):
        ModelVersionFactory(model=model, status=ModelVersion.Status.APPROVED)
    deploy_first(model, actor=engineer)
    return services.rollout_start(
        actor=engineer,
        model=model,
        candidate=model.versions.get(number=2),
        steps=[{"weight": 50, "bake_seconds": 600}, {"weight": 100, "bake_seconds": 600}],
    )


def _log_calls(rollout, *, version, route: str, latencies: list[float], offset_ms: int) -> None:
    rows = []
    for call, latency in enumerate(latencies):
        at = rollout.step_started_at + timedelta(milliseconds=offset_ms + 100 * call + 1)
        for _ in range(INPUTS_PER_CALL):
            entry = new_entry(
                model_id=rollout.model_id,
                version_id=version.pk,
                rollout_id=rollout.pk,
                route=route,
                text="很好",
                key_digest="",
                label="pos",
                confidence=0.9,
                latency_ms=latency,
                created_at=at,
            )
            rows.append(PredictionLog(**entry))
    PredictionLog.objects.bulk_create(rows)


def _latency_of(rollout) -> dict:
    until = rollout.step_started_at + timedelta(seconds=60)
    measurements = measure(rollout, since=rollout.step_started_at, until=until)
    return next(m for m in measurements if m["name"] == "latency_p95_ratio")


def _steady(count: int, base: float, start: int = 0) -> list[float]:
    """Distinct latencies spread evenly over base .. base + 10 ms."""
    return [base + ((start + n) * 7 % count) * 10 / count + n * 1e-3 for n in range(count)]


def test_two_slow_calls_among_twenty_push_the_p95_over_its_limit_but_are_noise(live_rollout):
    stable_calls = _steady(60, base=20.0)
    candidate_calls = _steady(18, base=20.0, start=3) + [55.0, 56.0]
    _log_calls(live_rollout, version=live_rollout.stable, route="stable", latencies=stable_calls, offset_ms=0)
    _log_calls(live_rollout, version=live_rollout.candidate, route="candidate", latencies=candidate_calls, offset_ms=50)

    latency = _latency_of(live_rollout)

    assert latency["value"] > latency["threshold"]  # the p95 alone would have failed the step
    assert latency["verdict"] == "successful"
    assert latency["p_value"] >= LATENCY_SIGNIFICANCE
    assert "not significantly slower" in latency["detail"] and "20 vs 60 calls" in latency["detail"]


def test_a_candidate_slower_on_most_calls_fails(live_rollout):
    _log_calls(live_rollout, version=live_rollout.stable, route="stable", latencies=_steady(60, 20.0), offset_ms=0)
    _log_calls(
        live_rollout, version=live_rollout.candidate, route="candidate", latencies=_steady(20, 45.0), offset_ms=50
    )

    latency = _latency_of(live_rollout)

    assert latency["verdict"] == "failed"
    assert latency["value"] > latency["threshold"]
    assert "slower: one-sided Mann-Whitney U" in latency["detail"]


def test_one_call_slower_than_every_stable_call_is_evidence_only_against_many_stable_calls():
    # A 5 % step may give the candidate one call a window: exact p = 1 / (stable calls + 1).
    assert slower_p_value([90.0], _steady(28, 20.0)) == pytest.approx(1 / 29)
    assert slower_p_value([90.0], _steady(28, 20.0)) >= LATENCY_SIGNIFICANCE
    assert slower_p_value([90.0], _steady(120, 20.0)) == pytest.approx(1 / 121)
    assert slower_p_value([90.0], _steady(120, 20.0)) < LATENCY_SIGNIFICANCE
    assert slower_p_value([25.0], _steady(28, 20.0)) > 0.4
    assert slower_p_value([], [1.0]) == 1.0
