"""A real Celery worker with beat moves a healthy rollout through its steps
on its own while real traffic flows, and promotes it."""

import csv
import time

import pytest

from rollouts import routing, services
from rollouts.models import AnalysisRun, Rollout, ServingState
from rollouts.prediction_log import flush_prediction_logs
from rollouts.serving import predict
from tests.conftest import wait_for
from tests.rollouts.rollout_helpers import deploy_first

pytestmark = pytest.mark.worker


@pytest.mark.usefixtures("committed_db")
def test_worker_with_beat_walks_a_healthy_rollout_to_promotion(
    served_model,
    engineer,
    worker_pool,
    settings,
    demo_models,
):
    # Short intervals for the test: analysis every 2 s, beat ticking every second.
    settings.GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS = 1
    worker_pool.start(
        "analyst", beat=True, env={"GLASSBOX_ROLLOUT_TICK_SECONDS": "1", "GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS": "1"}
    )
    with open(demo_models["holdout_csv"], encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    deploy_first(served_model, actor=engineer)
    rollout = services.rollout_start(
        actor=engineer,
        model=served_model,
        candidate=served_model.versions.get(number=2),
        steps=[{"weight": 50, "bake_seconds": 0}, {"weight": 100, "bake_seconds": 0}],
        thresholds={"min_requests": 5, "max_latency_p95_ratio": 5.0, "max_label_divergence": 0.3},
        analysis_interval_seconds=2,
    )
    routing.warm_versions(served_model)

    served_by = set()
    keys = iter(range(10**6))

    def promoted_while_serving() -> bool:
        # Steady traffic, as a live model gets, until the platform promotes.
        for start in range(0, 80, 4):
            answers = predict(actor=engineer, model=served_model, inputs=texts[start : start + 4], key=f"u{next(keys)}")
            served_by.update((a["version"], a["route"]) for a in answers)
        flush_prediction_logs(timeout=10)
        rollout.refresh_from_db()
        assert rollout.status in (Rollout.Status.PROGRESSING, Rollout.Status.PROMOTED), rollout.status_reason
        time.sleep(0.2)
        return rollout.status == Rollout.Status.PROMOTED

    wait_for(promoted_while_serving, timeout=180, interval=0, what="the worker to promote the rollout")

    runs = list(AnalysisRun.objects.filter(rollout=rollout).order_by("window_end"))
    assert [run.action for run in runs if run.action != "none"] == ["advanced", "promoted"]
    assert all(run.verdict == "successful" for run in runs), [run.measurements for run in runs]
    assert ServingState.objects.get(model=served_model).stable_version.number == 2
    assert {(1, "stable"), (2, "candidate")} <= served_by
    assert "rollouts.tasks.analyse_rollout" in worker_pool.log("analyst")
