"""The REST contract of rollouts: start and list, read one and its analysis
runs, the manual gates; bad input answers 4xx JSON `detail` and changes nothing."""

from datetime import timedelta

import pytest

from governance.models import AuditEvent
from registry.models import ModelVersion
from rollouts import services
from rollouts.analysis import rollout_analyse
from rollouts.models import DEFAULT_STEPS, Rollout
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, api_client_for
from tests.rollouts.rollout_helpers import deploy_first


@pytest.fixture
def model(engineer):
    """zh-api: v1 deployed, v2 approved (version rows without artifacts: nothing is loaded)."""
    model = RegisteredModelFactory(name="zh-api", created_by=engineer)
    for _ in range(2):
        ModelVersionFactory(model=model, status=ModelVersion.Status.APPROVED)
    deploy_first(model, actor=engineer)
    return model


def _post(user, path, body=None):
    return api_client_for(user).post(path, body or {}, format="json")


def test_start_answers_201_with_the_rollout(model, engineer):
    response = _post(engineer, "/api/v1/models/zh-api/rollouts/", {"candidate": 2})

    assert response.status_code == 201, response.json()
    body = response.json()
    rollout = Rollout.objects.get(pk=body["id"])
    assert body["url"] == f"/api/v1/rollouts/{rollout.pk}/"
    assert (body["model"], body["candidate"], body["stable"], body["status"]) == ("zh-api", 2, 1, "progressing")
    assert body["steps"] == DEFAULT_STEPS and body["current_step"] == 0
    assert (body["candidate_weight"], body["shadow"], body["interval"], body["failures"]) == (0, True, 60, 0)
    assert body["created_by"] == "erin" and body["finished_at"] is None and body["analysis"] == []


def test_start_takes_steps_thresholds_and_interval(model, engineer):
    body = {
        "candidate": 2,
        "steps": [{"weight": 10, "bake_seconds": 60}, {"weight": 100, "bake_seconds": 60}],
        "thresholds": {"max_error_rate": 0.02},
        "analysis_interval_seconds": 30,
    }
    response = _post(engineer, "/api/v1/models/zh-api/rollouts/", body)

    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["steps"] == [
        {"weight": 10, "shadow": False, "bake_seconds": 60},
        {"weight": 100, "shadow": False, "bake_seconds": 60},
    ]
    assert data["candidate_weight"] == 10 and data["shadow"] is False
    assert data["thresholds"]["max_error_rate"] == 0.02 and data["interval"] == 30


@pytest.mark.parametrize(
    "body, status, detail",
    [
        ({"candidate": 9}, 404, "zh-api has no version 9"),
        ({"candidate": 1}, 409, "only an approved version can roll out"),
        ({}, 400, "candidate"),
        ({"candidate": "two"}, 400, "candidate"),
        ({"candidate": 2, "steps": [{"weight": 50}, {"weight": 40}, {"weight": 100}]}, 400, "step 2: weight 40"),
        ({"candidate": 2, "steps": [{"weight": 50}, {"weight": 150}]}, 400, "step 2: weight must be"),
        ({"candidate": 2, "thresholds": {"max_errors": 1}}, 400, "Unknown thresholds: max_errors"),
        ({"candidate": 2, "analysis_interval_seconds": 1}, 400, "analysis_interval_seconds"),
        ({"candidate": 2, "reference_dataset": 999999}, 400, "No dataset 999999"),
    ],
)
def test_bad_start_requests_answer_4xx_and_change_nothing(model, engineer, body, status, detail):
    response = _post(engineer, "/api/v1/models/zh-api/rollouts/", body)

    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert Rollout.objects.filter(model=model).count() == 1  # the first deployment only


def test_unknown_model_is_404(model, engineer):
    response = _post(engineer, "/api/v1/models/nope/rollouts/", {"candidate": 1})
    assert response.status_code == 404 and "detail" in response.json()


def test_second_active_rollout_is_409(model, engineer):
    first = _post(engineer, "/api/v1/models/zh-api/rollouts/", {"candidate": 2}).json()
    ModelVersionFactory(model=model, status=ModelVersion.Status.APPROVED)

    response = _post(engineer, "/api/v1/models/zh-api/rollouts/", {"candidate": 3})

    assert response.status_code == 409
    assert response.json()["detail"] == f"rollout #{first['id']} is already active for zh-api."


@pytest.mark.parametrize("persona", ["reviewer", "manager"])
def test_readers_may_read_but_not_start(model, persona, request):
    user = request.getfixturevalue(persona)
    response = _post(user, "/api/v1/models/zh-api/rollouts/", {"candidate": 2})
    assert response.status_code == 403 and "detail" in response.json()

    listing = api_client_for(user).get("/api/v1/models/zh-api/rollouts/")
    assert listing.status_code == 200 and [r["candidate"] for r in listing.json()["results"]] == [1]


def test_outsiders_and_anonymous_read_nothing(model, outsider):
    rollout = Rollout.objects.get(model=model)
    for client in (api_client_for(outsider), api_client_for(None)):
        for path in (
            "/api/v1/models/zh-api/rollouts/",
            f"/api/v1/rollouts/{rollout.pk}/",
            f"/api/v1/rollouts/{rollout.pk}/analysis/",
        ):
            response = client.get(path)
            assert response.status_code in (401, 403), path
            assert "detail" in response.json()


def test_detail_and_analysis_list(model, engineer, reviewer):
    rollout = services.rollout_start(actor=engineer, model=model, candidate=model.versions.get(number=2))
    run = rollout_analyse(rollout=rollout, now=rollout.step_started_at + timedelta(seconds=60))

    detail = api_client_for(reviewer).get(f"/api/v1/rollouts/{rollout.pk}/").json()
    runs = api_client_for(reviewer).get(f"/api/v1/rollouts/{rollout.pk}/analysis/").json()["results"]

    assert detail["status"] == "paused" and "inconclusive" in detail["status_reason"]
    assert [r["id"] for r in detail["analysis"]] == [run.pk] == [r["id"] for r in runs]
    assert runs[0]["verdict"] == "inconclusive" and runs[0]["action"] == "paused"
    assert {m["name"] for m in runs[0]["measurements"]} >= {"error_rate", "latency_p95_ratio", "input_drift"}
    assert api_client_for(reviewer).get("/api/v1/rollouts/999999/").status_code == 404


def test_gates_answer_the_rollout(model, engineer):
    rollout = services.rollout_start(actor=engineer, model=model, candidate=model.versions.get(number=2))
    base = f"/api/v1/rollouts/{rollout.pk}"

    paused = _post(engineer, f"{base}/pause/", {"reason": "a look first"})
    resumed = _post(engineer, f"{base}/resume/")
    promoted = _post(engineer, f"{base}/promote/", {"reason": "all good"})

    assert [r.status_code for r in (paused, resumed, promoted)] == [200, 200, 200]
    assert (paused.json()["status"], paused.json()["status_reason"]) == ("paused", "a look first")
    assert resumed.json()["status"] == "progressing"
    assert promoted.json()["status"] == "promoted" and promoted.json()["finished_at"] is not None
    assert model.versions.get(number=2).status == ModelVersion.Status.DEPLOYED

    again = _post(engineer, f"{base}/abort/")
    assert again.status_code == 409
    assert again.json()["current_status"] == "promoted" and "cannot move to aborted" in again.json()["detail"]


def test_abort_by_api_records_the_reason(model, engineer):
    rollout = services.rollout_start(actor=engineer, model=model, candidate=model.versions.get(number=2))
    response = _post(engineer, f"/api/v1/rollouts/{rollout.pk}/abort/", {"reason": "latency complaints"})

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["candidate_weight"]) == ("aborted", 0)
    assert AuditEvent.objects.get(action="rollout.abort").detail["reason"] == "latency complaints"


def test_gate_refusals(model, engineer, reviewer):
    rollout = services.rollout_start(actor=engineer, model=model, candidate=model.versions.get(number=2))
    base = f"/api/v1/rollouts/{rollout.pk}"

    forbidden = _post(reviewer, f"{base}/abort/")
    too_long = _post(engineer, f"{base}/pause/", {"reason": "x" * 2001})
    unknown = _post(engineer, "/api/v1/rollouts/999999/pause/")

    assert (forbidden.status_code, too_long.status_code, unknown.status_code) == (403, 400, 404)
    assert all("detail" in r.json() for r in (forbidden, too_long, unknown))
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.PROGRESSING
    assert AuditEvent.objects.filter(action="rollout.abort", outcome="denied", actor_username="rita").exists()


def test_listing_costs_the_same_queries_for_one_rollout_or_many(model, engineer, reviewer):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def analysed_and_aborted():
        rollout = services.rollout_start(actor=engineer, model=model, candidate=model.versions.get(number=2))
        rollout_analyse(rollout=rollout, now=rollout.step_started_at + timedelta(seconds=60))
        services.rollout_abort(actor=engineer, rollout=rollout, reason="again")

    def listing():
        client = api_client_for(reviewer)
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/api/v1/models/zh-api/rollouts/")
        assert response.status_code == 200
        return len(queries), response.json()["results"]

    analysed_and_aborted()
    few, _ = listing()
    analysed_and_aborted()
    analysed_and_aborted()
    many, body = listing()

    assert many == few
    assert [len(r["analysis"]) for r in body] == [1, 1, 1, 0]  # the first deployment was never analysed
