"""The rollout analysis on real traffic: predictions go through
rollouts.serving.predict (the same path as POST /predict/), are logged, and
rollout_analyse judges each window and acts on it (Argo semantics)."""

from datetime import timedelta

import numpy
import pytest
import skops.io
from django.utils import timezone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from governance.models import AuditEvent
from registry.models import ModelVersion
from rollouts import routing, services
from rollouts.analysis import rollout_analyse
from rollouts.models import AnalysisRun, PredictionLog, Rollout, ServingState
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, approve, upload_skops
from tests.rollouts.rollout_helpers import deploy_first, send_traffic, upload_dataset

# Generous on latency and label shares: those checks are not what these
# tests are about, and a shared two-core CI machine makes latency noisy.
TEST_THRESHOLDS = {"max_latency_p95_ratio": 5.0, "max_label_divergence": 0.2, "min_requests": 20}


@pytest.fixture
def inline_logs(settings):
    """Prediction logs written by flush() in the test's own thread and
    transaction (no background writer), and fresh routing tables."""
    from rollouts.prediction_log import reset_writer

    settings.GLASSBOX_PREDICTION_LOG_FLUSH_SECONDS = 0
    reset_writer()
    routing.clear_routing_cache()
    yield
    reset_writer()
    routing.clear_routing_cache()


def _traffic(model, texts, actor, **options):
    # A new routing table per tick, as every process has within a second.
    routing.invalidate_routing(model.pk)
    return send_traffic(model, texts, actor=actor, **options)


def _start(model, actor, *, steps, dataset=None, thresholds=TEST_THRESHOLDS) -> Rollout:
    rollout = services.rollout_start(
        actor=actor,
        model=model,
        candidate=model.versions.get(number=2),
        steps=steps,
        thresholds=thresholds,
        reference_dataset=dataset,
    )
    routing.warm_versions(model)  # loaded before it takes traffic, as a serving process does
    return rollout


def _by_name(run: AnalysisRun) -> dict[str, dict]:
    return {m["name"]: m for m in run.measurements}


def test_a_healthy_candidate_walks_every_step_and_is_promoted(
    served_model, engineer, inline_logs, holdout_texts, demo_models
):
    deploy_first(served_model, actor=engineer)
    dataset = upload_dataset(uploader=engineer, path=demo_models["holdout_csv"])
    steps = [
        {"weight": 0, "shadow": True, "bake_seconds": 0},
        {"weight": 25, "bake_seconds": 0},
        {"weight": 50, "bake_seconds": 0},
        {"weight": 100, "bake_seconds": 0},
    ]
    rollout = _start(served_model, engineer, steps=steps, dataset=dataset)

    runs = []
    for _ in steps:
        answers = _traffic(served_model, holdout_texts * 2, engineer, batch=4)
        assert all(a["version"] in (1, 2) for a in answers)
        run = rollout_analyse(rollout=rollout, now=timezone.now())
        assert run is not None
        runs.append(run)
        assert run.verdict == "successful", run.measurements

    assert [run.action for run in runs] == ["advanced", "advanced", "advanced", "promoted"]
    assert [run.step_index for run in runs] == [0, 1, 2, 3]
    shadow_run = _by_name(runs[0])
    assert shadow_run["shadow_agreement"]["value"] == 1.0  # the same pipeline, saved twice
    assert all(_by_name(run)["input_drift"]["verdict"] == "successful" for run in runs)
    # At 100 % the stable version answers nothing; its baseline is its traffic since the start,
    # and for latency since its first live step (mirroring slowed its shadow-step calls).
    assert "since the rollout began" in _by_name(runs[3])["label_divergence"]["detail"]
    assert "since the first live step" in _by_name(runs[3])["latency_p95_ratio"]["detail"]
    assert shadow_run["latency_p95_ratio"]["verdict"] == "not_measured"
    assert [_by_name(run)["latency_p95_ratio"]["verdict"] for run in runs[1:]] == ["successful"] * 3

    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.PROMOTED
    state = ServingState.objects.get(model=served_model)
    assert (state.stable_version.number, state.previous_version.number) == (2, 1)
    assert served_model.versions.get(number=1).status == ModelVersion.Status.DEPLOYED  # kept for rollback
    assert list(AuditEvent.objects.filter(action="rollout.advance").values_list("actor_id", flat=True)) == [None] * 3
    assert AuditEvent.objects.filter(action="rollout.promote", actor_id=None).count() == 1
    # Every step's candidate share was real traffic, logged per version and route.
    candidate_rows = PredictionLog.objects.filter(version__number=2, rollout=rollout)
    assert set(candidate_rows.values_list("route", flat=True)) == {"shadow", "candidate"}


@pytest.fixture
def broken_candidate_model(engineer, engineer2, reviewer, demo_models, tmp_path, holdout_texts):
    """`zh-broken`: v1 the demo TF-IDF pipeline; v2 a real skops pipeline
    that answers only texts it has seen (a one-hot lookup that raises
    "unknown categories" on anything else). It passes the upload's load
    check - its probe texts are among those it knows - and fails on live
    traffic at predict time, as a model with a serving bug does."""
    model = RegisteredModelFactory(name="zh-broken", created_by=engineer)
    known = ["测试", "很好", "预热", *holdout_texts[:10]]
    labels = ["negative", "positive"] * (len(known) // 2) + ["positive"] * (len(known) % 2)
    lookup = Pipeline(
        [
            ("column", FunctionTransformer(numpy.vstack)),
            ("lookup", OneHotEncoder(handle_unknown="error")),
            ("classifier", LogisticRegression()),
        ]
    ).fit(known, labels)
    broken = tmp_path / "lookup.skops"
    skops.io.dump(lookup, broken)
    for path in (demo_models["sklearn_skops"], broken):
        approve(
            upload_skops(uploader=engineer, model_name=model.name, skops_path=path),
            submitter=engineer2,
            reviewer=reviewer,
        )
    return model


def test_an_erroring_candidate_is_aborted_within_one_interval(
    broken_candidate_model, engineer, inline_logs, holdout_texts
):
    model = broken_candidate_model
    deploy_first(model, actor=engineer)
    rollout = _start(model, engineer, steps=[{"weight": 50, "bake_seconds": 300}, {"weight": 100, "bake_seconds": 300}])

    answers = _traffic(model, holdout_texts[10:], engineer, batch=4)
    # Its users never saw the failures: the stable version answered instead.
    assert {a["version"] for a in answers} == {1}
    failed_rows = PredictionLog.objects.filter(version__number=2, route="candidate").exclude(error="")
    assert failed_rows.count() >= 20
    assert "unknown categories" in failed_rows.first().error

    run = rollout_analyse(rollout=rollout, now=timezone.now())  # the first interval's analysis

    assert run.verdict == "failed" and run.action == "aborted"
    error_rate = _by_name(run)["error_rate"]
    assert error_rate["verdict"] == "failed" and error_rate["value"] == 1.0 and error_rate["threshold"] == 0.01
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.ABORTED and rollout.candidate_weight == 0
    assert "error_rate" in rollout.status_reason
    assert AuditEvent.objects.filter(action="rollout.abort", actor_id=None, outcome="ok").exists()
    # All traffic is back on the stable version at once.
    after = _traffic(model, holdout_texts[10:60], engineer, batch=4)
    assert {(a["version"], a["route"]) for a in after} == {(1, "stable")}
    assert model.versions.get(number=2).status == ModelVersion.Status.APPROVED


def test_no_traffic_is_inconclusive_and_pauses(engineer, inline_logs):
    # No model is loaded when nothing is served: version rows without artifacts suffice.
    model = RegisteredModelFactory(name="zh-quiet", created_by=engineer)
    for _ in range(2):
        ModelVersionFactory(model=model, status=ModelVersion.Status.APPROVED)
    deploy_first(model, actor=engineer)
    rollout = services.rollout_start(actor=engineer, model=model, candidate=model.versions.get(number=2))

    run = rollout_analyse(rollout=rollout, now=rollout.step_started_at + timedelta(seconds=60))

    assert run.verdict == "inconclusive" and run.action == "paused"
    verdicts = {m["name"]: m["verdict"] for m in run.measurements}
    assert verdicts == {
        "error_rate": "inconclusive",
        "latency_p95_ratio": "not_measured",  # a shadow step: mirrored calls are no latency evidence
        "label_divergence": "inconclusive",
        "shadow_agreement": "inconclusive",
        "input_drift": "not_measured",
    }
    reasons = {m["name"]: m.get("reason") for m in run.measurements if m["verdict"] == "not_measured"}
    assert "latency is compared on live traffic only" in reasons["latency_p95_ratio"]
    assert "no reference dataset" in reasons["input_drift"]
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.PAUSED and rollout.current_step == 0
    assert "0 candidate requests < min_requests 20" in rollout.status_reason
    assert AuditEvent.objects.filter(action="rollout.pause", actor_id=None).exists()
    # Paused: later ticks do nothing until a person resumes it.
    assert rollout_analyse(rollout=rollout, now=rollout.step_started_at + timedelta(seconds=120)) is None
    assert rollout.analysis_runs.count() == 1


def test_a_window_is_analysed_once(engineer, inline_logs):
    model = RegisteredModelFactory(name="zh-twice", created_by=engineer)
    for _ in range(2):
        ModelVersionFactory(model=model, status=ModelVersion.Status.APPROVED)
    deploy_first(model, actor=engineer)
    rollout = services.rollout_start(
        actor=engineer, model=model, candidate=model.versions.get(number=2), thresholds={"failure_limit": 5}
    )
    end = rollout.step_started_at + timedelta(seconds=60)

    # A tick that measured before another one acted finds the rollout moved on.
    stale = services.rollout_record_analysis(
        rollout=rollout,
        expected_last_analysis_at=timezone.now(),
        expected_step=0,
        window_start=rollout.step_started_at,
        window_end=end,
        measurements=[],
        verdict="successful",
        now=end,
    )
    first = rollout_analyse(rollout=rollout, now=end)
    again = rollout_analyse(rollout=rollout, now=end)

    assert stale is None and first is not None and again is None
    assert AnalysisRun.objects.filter(rollout=rollout).count() == 1


def test_drift_shows_when_traffic_from_another_domain_arrives(served_model, engineer, inline_logs, demo_models):
    deploy_first(served_model, actor=engineer)
    dataset = upload_dataset(uploader=engineer, path=demo_models["holdout_csv"])
    rollout = _start(
        served_model,
        engineer,
        dataset=dataset,
        steps=[{"weight": 0, "shadow": True, "bake_seconds": 300}, {"weight": 100, "bake_seconds": 300}],
    )
    kana = [f"この商品はとても良かったです。また買いたいと思います。{i}番目のレビュー" for i in range(60)]
    english = [f"Review number {i}: the hotel was clean and the staff were friendly." for i in range(60)]

    _traffic(served_model, kana + english, engineer, batch=4)
    run = rollout_analyse(rollout=rollout, now=timezone.now())

    drift = _by_name(run)["input_drift"]
    assert drift["verdict"] == "failed" and drift["value"] > drift["threshold"] == 0.1
    assert drift["signals"]["character_js_distance"] > 0.5
    assert drift["signals"]["unknown_rate_increase"] > 0.05  # characters the TF-IDF vocabulary never saw
    assert _by_name(run)["shadow_agreement"]["verdict"] == "successful"
    assert run.verdict == "failed" and run.action == "aborted"
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.ABORTED and "input_drift" in rollout.status_reason


def test_failures_up_to_the_limit_are_tolerated(broken_candidate_model, engineer, inline_logs, holdout_texts):
    model = broken_candidate_model
    deploy_first(model, actor=engineer)
    rollout = _start(
        model,
        engineer,
        steps=[{"weight": 50, "bake_seconds": 0}, {"weight": 100, "bake_seconds": 0}],
        thresholds={**TEST_THRESHOLDS, "failure_limit": 1},
    )

    _traffic(model, holdout_texts[10:], engineer, batch=4)
    first = rollout_analyse(rollout=rollout, now=timezone.now())
    _traffic(model, holdout_texts[10:], engineer, batch=4)
    second = rollout_analyse(rollout=rollout, now=timezone.now())

    assert (first.verdict, first.action) == ("failed", "none")
    assert (second.verdict, second.action) == ("failed", "aborted")
    rollout.refresh_from_db()
    assert rollout.failures == 2 and rollout.status == Rollout.Status.ABORTED
