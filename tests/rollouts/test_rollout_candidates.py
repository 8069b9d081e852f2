"""Transformers candidates under the default rollout (the default step shape:
shadow, 5, 25, 50, 100 %, and the default thresholds; only the bake times and
the analysis interval are cut to seconds), driven by a real worker with beat
while steady live traffic flows through the serving path:

- a candidate with the stable's very weights (another upload of the same
  files) walks every step to promotion: its mirrored calls, timed in the
  background pool, are no latency evidence;
- a candidate with the same answers that is many times slower (a deeper,
  wider network) passes the shadow step and fails on latency at its first
  live step;
- a label-permuted candidate still aborts at the shadow step.
"""

import itertools
import math
import time

import pytest

from rollouts import routing, services
from rollouts.analysis import SHADOW_LATENCY_REASON
from rollouts.models import DEFAULT_STEPS, DEFAULT_THRESHOLDS, AnalysisRun, Rollout, ServingState
from rollouts.prediction_log import flush_prediction_logs
from rollouts.serving import predict
from rollouts.shadow import wait_for_shadow
from tests.conftest import RegisteredModelFactory, api_client_for, approve, wait_for
from tests.rollouts.rollout_helpers import deploy
from tests.rollouts.transformers_variants import deeper_wider, label_permuted, repacked

pytestmark = pytest.mark.worker

# Inputs per call: one call to the candidate in a window is min_requests rows.
BATCH = DEFAULT_THRESHOLDS["min_requests"]
# Calls per cycle of steady traffic: the 5 % step's candidate answers one of them.
CYCLE = 20


@pytest.fixture(scope="session")
def bert_candidates(demo_models, tmp_path_factory) -> dict[str, bytes]:
    """The demo BERT's variants, built once per session (seconds)."""
    bert = demo_models["bert_zip"]
    return {
        "identical": repacked(bert),
        "slower": deeper_wider(bert, layers=4, intermediate_size=2048),
        "permuted": label_permuted(bert),
    }


def _upload_approved(model, data: bytes, *, engineer, engineer2, reviewer):
    import io

    handle = io.BytesIO(data)
    handle.name = "bert.zip"
    response = api_client_for(engineer).post(
        f"/api/v1/models/{model.name}/versions/", {"artifact": handle, "flavor": "transformers"}, format="multipart"
    )
    assert response.status_code == 201, response.json()
    return approve(model.versions.get(number=response.json()["version"]), submitter=engineer2, reviewer=reviewer)


@pytest.fixture
def bert_rollout(engineer, engineer2, reviewer, demo_models, holdout_texts, worker_pool, settings):
    """`zh-bert` serving the demo BERT (v1), a worker with beat ticking every
    second, and a function that rolls a candidate's archive out with the
    default steps and thresholds."""
    settings.GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS = 1
    # A short mirror backlog: a slow candidate's mirrors are skipped rather than queued for minutes.
    settings.GLASSBOX_SHADOW_MAX_PENDING = 5 * BATCH
    model = RegisteredModelFactory(name="zh-bert", created_by=engineer)
    stable = _upload_approved(
        model, demo_models["bert_zip"].read_bytes(), engineer=engineer, engineer2=engineer2, reviewer=reviewer
    )
    deploy(model, stable, actor=engineer)
    worker_pool.start(
        "analyst", beat=True, env={"GLASSBOX_ROLLOUT_TICK_SECONDS": "1", "GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS": "1"}
    )
    batches = [holdout_texts[begin : begin + BATCH] for begin in _starts(holdout_texts)]

    def start(data: bytes) -> Rollout:
        candidate = _upload_approved(model, data, engineer=engineer, engineer2=engineer2, reviewer=reviewer)
        # Every analysis window must hold a cycle of traffic or more (the 5 %
        # step's candidate answers one call per cycle; fewer than min_requests
        # answers is inconclusive, which pauses), and the shadow step mirrors
        # every call: seconds on a quiet machine, more on a busy one or with a
        # slow candidate. Timed here to size the interval, never asserted on.
        stable_seconds, candidate_seconds = _cycle_seconds(stable, batches), _cycle_seconds(candidate, batches)
        interval = max(2, math.ceil(1.5 * (stable_seconds + candidate_seconds)))
        print(
            f"{CYCLE} calls of {BATCH} inputs: stable {stable_seconds:.2f} s, candidate {candidate_seconds:.2f} s; "
            f"analysis every {interval} s"
        )
        rollout = services.rollout_start(
            actor=engineer,
            model=model,
            candidate=candidate,
            steps=[{**step, "bake_seconds": 2 * interval} for step in DEFAULT_STEPS],
            analysis_interval_seconds=interval,
        )
        routing.warm_versions(model)  # loaded before it takes traffic, as a serving process does
        return rollout

    start.model = model
    return start


def _cycle_seconds(version, batches: list[list[str]]) -> float:
    """Seconds one cycle of calls takes this version's predictor in this
    process, after a first call of each batch shape (which pays once)."""
    from registry.selectors import version_predictor

    predictor = version_predictor(version)
    for texts in batches:
        predictor.predict_proba(texts)
    started = time.monotonic()
    for n in range(CYCLE):
        predictor.predict_proba(batches[n % len(batches)])
    return time.monotonic() - started


def _starts(texts: list[str]) -> range:
    return range(0, len(texts) - BATCH + 1, BATCH)


def _even_keys(rollout: Rollout, count: int = CYCLE) -> list[str]:
    """One key per 100/count % of the rollout's key space, in order: cycling
    through them sends the candidate exactly its weight's share of calls
    (steady traffic from `count` users) instead of a random share."""
    keys: dict[int, str] = {}
    for n in itertools.count():
        key = f"user-{n}"
        keys.setdefault(int(routing.route_key(rollout.pk, key) * count / 100), key)
        if len(keys) == count:
            return [keys[bucket] for bucket in range(count)]


def _serve_until_finished(rollout: Rollout, texts: list[str], *, actor) -> list[AnalysisRun]:
    """Steady live traffic until the platform promotes or aborts the rollout
    on its own; a pause (an inconclusive analysis) fails the test."""
    model = rollout.model
    keys = itertools.cycle(_even_keys(rollout))
    inputs = itertools.cycle(_starts(texts))
    # Each step bakes two intervals; a slack of three more per step for windows that straddle a step.
    timeout = 60 + len(rollout.steps) * 5 * rollout.analysis_interval_seconds

    def finished() -> bool:
        for _ in range(CYCLE):
            # Each call sees the rollout's current step, as every process does within a second.
            routing.invalidate_routing(model.pk)
            start = next(inputs)
            predict(actor=actor, model=model, inputs=texts[start : start + BATCH], key=next(keys))
        flush_prediction_logs(timeout=10)
        rollout.refresh_from_db()
        assert rollout.status != Rollout.Status.PAUSED, rollout.status_reason
        return not rollout.is_active

    try:
        wait_for(finished, timeout=timeout, interval=0, what=f"the worker to finish {rollout}")
    finally:
        # Mirrors still queued would log rows after the test's database is gone.
        assert wait_for_shadow(timeout=120)
        assert flush_prediction_logs(timeout=30)
    runs = list(AnalysisRun.objects.filter(rollout=rollout).order_by("window_end"))
    for run in runs:  # the figures behind each decision, for whoever reads a failure
        latency = next(m for m in run.measurements if m["name"] == "latency_p95_ratio")
        print(f"step {run.step_index}: {run.verdict} -> {run.action}; latency {latency['value']} {latency['detail']}")
    return runs


def _by_name(run: AnalysisRun) -> dict[str, dict]:
    return {m["name"]: m for m in run.measurements}


@pytest.mark.usefixtures("committed_db")
def test_a_candidate_with_the_stables_weights_walks_every_default_step_to_promotion(
    bert_rollout, bert_candidates, holdout_texts, engineer
):
    rollout = bert_rollout(bert_candidates["identical"])

    runs = _serve_until_finished(rollout, holdout_texts, actor=engineer)

    assert rollout.status == Rollout.Status.PROMOTED, rollout.status_reason
    assert [run.action for run in runs if run.action != "none"] == ["advanced"] * 4 + ["promoted"]
    assert all(run.verdict == "successful" for run in runs), [run.measurements for run in runs]
    shadow_runs = [_by_name(run) for run in runs if run.step_index == 0]
    assert all(run["shadow_agreement"]["value"] == 1.0 for run in shadow_runs)
    # Mirrored calls are not compared with live ones; every live step compared latency.
    assert all(run["latency_p95_ratio"]["reason"] == SHADOW_LATENCY_REASON for run in shadow_runs)
    live = [_by_name(run)["latency_p95_ratio"] for run in runs if run.step_index > 0]
    assert {m["verdict"] for m in live} == {"successful"}
    assert ServingState.objects.get(model=rollout.model).stable_version == rollout.candidate


@pytest.mark.usefixtures("committed_db")
def test_a_much_slower_candidate_with_the_same_answers_fails_on_latency_at_its_first_live_step(
    bert_rollout, bert_candidates, holdout_texts, engineer
):
    rollout = bert_rollout(bert_candidates["slower"])

    runs = _serve_until_finished(rollout, holdout_texts, actor=engineer)

    assert rollout.status == Rollout.Status.ABORTED
    assert "latency_p95_ratio" in rollout.status_reason
    shadow_runs = [run for run in runs if run.step_index == 0]
    assert shadow_runs[-1].action == "advanced"  # the same answers: the shadow step passed
    assert all(_by_name(run)["shadow_agreement"]["value"] == 1.0 for run in shadow_runs)
    last = runs[-1]
    assert (last.step_index, last.verdict, last.action) == (1, "failed", "aborted")
    latency = _by_name(last)["latency_p95_ratio"]
    assert latency["verdict"] == "failed" and latency["value"] > DEFAULT_THRESHOLDS["max_latency_p95_ratio"]
    assert ServingState.objects.get(model=rollout.model).stable_version.number == 1


@pytest.mark.usefixtures("committed_db")
def test_a_label_permuted_candidate_aborts_at_the_shadow_step(bert_rollout, bert_candidates, holdout_texts, engineer):
    rollout = bert_rollout(bert_candidates["permuted"])

    runs = _serve_until_finished(rollout, holdout_texts, actor=engineer)

    assert rollout.status == Rollout.Status.ABORTED
    assert [run.step_index for run in runs] == [0]
    measurements = _by_name(runs[0])
    assert measurements["shadow_agreement"]["verdict"] == "failed"
    assert measurements["shadow_agreement"]["value"] < DEFAULT_THRESHOLDS["min_shadow_agreement"]
    assert measurements["latency_p95_ratio"]["verdict"] == "not_measured"
    assert "shadow_agreement" in rollout.status_reason
    assert rollout.candidate_weight == 0
