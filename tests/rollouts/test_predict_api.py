"""POST /api/v1/models/{name}/predict/: real versions answer, routing by
key, pinning, shadow mirrors, failures, and every bad input refused with a
4xx JSON detail."""

import uuid

import pytest
from django.contrib.auth.models import Permission

from governance.models import AuditEvent
from registry.models import ModelVersion
from rollouts import routing, services
from rollouts.models import PredictionLog
from rollouts.prediction_log import flush_prediction_logs, key_hash
from rollouts.routing import route_key
from rollouts.shadow import wait_for_shadow
from tests.conftest import ModelVersionFactory, UserFactory, api_client_for
from tests.rollouts.rollout_helpers import deploy, start_canary

TEXTS = ["质量很好，非常满意", "太差了，再也不买了", "物流很快，包装完好"]


def predict(user, model_name="zh-serving", body=None, **headers):
    body = {"inputs": TEXTS} if body is None else body
    return api_client_for(user).post(f"/api/v1/models/{model_name}/predict/", body, format="json", **headers)


@pytest.fixture
def deployed(served_model, engineer, serving_env):
    deploy(served_model, served_model.versions.get(number=1), actor=engineer)
    return served_model


def test_stable_version_answers_and_every_prediction_is_logged(deployed, engineer):
    events_before = AuditEvent.objects.count()
    response = predict(engineer, body={"inputs": TEXTS, "key": "customer-17"})

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["model"] == "zh-serving"
    answers = body["predictions"]
    assert [a["version"] for a in answers] == [1, 1, 1] and {a["route"] for a in answers} == {"stable"}
    assert [a["label"] for a in answers[:2]] == ["positive", "negative"]
    for answer in answers:
        assert set(answer["probabilities"]) == {"negative", "positive"}
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
        assert answer["confidence"] == max(answer["probabilities"].values())
    # Data plane: no audit event per prediction, and no row until the log is flushed.
    assert AuditEvent.objects.count() == events_before
    assert flush_prediction_logs()
    rows = {str(r.prediction_id): r for r in PredictionLog.objects.filter(model=deployed)}
    assert set(rows) == {a["prediction_id"] for a in answers}
    for answer, text in zip(answers, TEXTS):
        row = rows[answer["prediction_id"]]
        assert (row.input_text, row.label, row.route, row.version.number) == (text, answer["label"], "stable", 1)
        assert row.confidence == pytest.approx(answer["confidence"]) and row.latency_ms > 0 and row.error == ""
        assert row.key_hash == key_hash("customer-17") and "customer-17" not in row.key_hash


def test_keyed_calls_are_sticky_and_split_by_the_weight(deployed, engineer):
    _, v2 = deployed.versions.order_by("number")
    rollout = start_canary(deployed, v2, actor=engineer, weight=50)
    seen = {}
    for n in range(120):
        key = f"user-{n}"
        answers = predict(engineer, body={"inputs": TEXTS[:2], "key": key}).json()["predictions"]
        # One call, one key: one version for all its inputs, the one the hash says.
        expected = (2, "candidate") if route_key(rollout.pk, key) < 50 else (1, "stable")
        assert {(a["version"], a["route"]) for a in answers} == {expected}
        seen[key] = expected
    for key in ("user-3", "user-44", "user-101"):  # asked again: same version
        answers = predict(engineer, body={"inputs": TEXTS[:1], "key": key}).json()["predictions"]
        assert (answers[0]["version"], answers[0]["route"]) == seen[key]
    assert 30 < sum(1 for v in seen.values() if v[0] == 2) < 90
    assert flush_prediction_logs()
    assert set(PredictionLog.objects.filter(model=deployed).values_list("rollout_id", flat=True)) == {rollout.pk}


def test_without_a_key_each_input_is_routed_on_its_own(deployed, engineer):
    _, v2 = deployed.versions.order_by("number")
    start_canary(deployed, v2, actor=engineer, weight=50)
    versions = set()
    for _ in range(10):
        answers = predict(engineer, body={"inputs": TEXTS * 5}).json()["predictions"]
        versions |= {a["version"] for a in answers}
    assert versions == {1, 2}


def test_shadow_answers_are_logged_with_their_live_prediction_and_never_returned(deployed, engineer):
    _, v2 = deployed.versions.order_by("number")
    rollout = start_canary(deployed, v2, actor=engineer, weight=0, shadow=True)
    answers = predict(engineer, body={"inputs": TEXTS, "key": "k"}).json()["predictions"]

    assert {(a["version"], a["route"]) for a in answers} == {(1, "stable")}
    assert wait_for_shadow(timeout=30) and flush_prediction_logs()
    shadows = PredictionLog.objects.filter(model=deployed, shadow=True)
    assert {str(s.mirror_of) for s in shadows} == {a["prediction_id"] for a in answers}
    for shadow in shadows:
        assert (shadow.route, shadow.version_id, shadow.rollout_id) == ("shadow", v2.pk, rollout.pk)
        live = PredictionLog.objects.get(prediction_id=shadow.mirror_of)
        assert shadow.input_text == live.input_text and shadow.label == live.label  # same model, same answer


def test_a_tester_may_pin_a_version(deployed, engineer):
    answers = predict(engineer, HTTP_X_GLASSBOX_VERSION="2").json()["predictions"]
    assert {(a["version"], a["route"]) for a in answers} == {(2, "pinned")}
    assert flush_prediction_logs()
    assert set(PredictionLog.objects.filter(model=deployed).values_list("route", "rollout_id")) == {("pinned", None)}


def test_pin_refusals(deployed, engineer):
    # Pinning goes with predicting (an engineer of the owning team): a caller
    # with the old global serving permission but no team is refused at the door.
    server_only = UserFactory(username="svc")
    server_only.user_permissions.add(Permission.objects.get(codename="serve_prediction"))
    response = predict(server_only, HTTP_X_GLASSBOX_VERSION="2")
    assert response.status_code == 403
    assert response.json()["detail"] == "You have no role that may request predictions."
    assert AuditEvent.objects.filter(action="prediction.request", outcome="denied", actor_username="svc").exists()

    assert predict(engineer, HTTP_X_GLASSBOX_VERSION="99").status_code == 404
    assert predict(engineer, HTTP_X_GLASSBOX_VERSION="two").status_code == 400
    registered = ModelVersionFactory(model=deployed, created_by=engineer)
    response = predict(engineer, HTTP_X_GLASSBOX_VERSION=str(registered.number))
    assert response.status_code == 409 and response.json()["current_status"] == "registered"
    assert flush_prediction_logs() and not PredictionLog.objects.exists()


def test_a_pinned_version_that_cannot_answer_is_a_503_and_its_errors_are_logged(deployed, engineer):
    # An approved version whose artifact is missing from the store: loading it fails.
    broken = ModelVersionFactory(model=deployed, created_by=engineer, status=ModelVersion.Status.APPROVED)
    response = predict(engineer, HTTP_X_GLASSBOX_VERSION=str(broken.number))
    assert response.status_code == 503 and "could not answer" in response.json()["detail"]
    assert flush_prediction_logs()
    rows = PredictionLog.objects.filter(version=broken)
    assert rows.count() == len(TEXTS) and all(r.error and r.label == "" for r in rows)


def test_a_failing_candidate_is_logged_as_errors_and_the_stable_answers(deployed, engineer):
    """A candidate that was loaded, then could no longer answer (its artifact
    gone from the store after it left the predictor cache)."""
    broken = ModelVersionFactory(model=deployed, created_by=engineer, status=ModelVersion.Status.APPROVED)
    services.rollout_start(
        actor=engineer, model=deployed, candidate=broken, steps=[{"weight": 100, "shadow": False, "bake_seconds": 60}]
    )
    routing._warmed.add(broken.artifact_sha256)  # it had been loaded and warmed
    routing.invalidate_routing(deployed.pk)

    response = predict(engineer, body={"inputs": TEXTS, "key": "k"})
    assert response.status_code == 200
    assert {(a["version"], a["route"]) for a in response.json()["predictions"]} == {(1, "stable")}
    assert flush_prediction_logs()
    failed = PredictionLog.objects.filter(version=broken, route="candidate")
    assert failed.count() == len(TEXTS) and all(r.error for r in failed)


# --- bad input --------------------------------------------------------------------------------


def test_unknown_model_is_404(served_model, engineer, serving_env):
    response = predict(engineer, model_name="no-such-model")
    assert response.status_code == 404 and "no-such-model" in response.json()["detail"]


def test_a_model_without_a_deployed_version_is_409(served_model, engineer, serving_env):
    response = predict(engineer)
    assert response.status_code == 409 and "no deployed version" in response.json()["detail"]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({}, 400, "inputs must be a list"),
        ({"inputs": "质量很好"}, 400, "inputs must be a list"),
        ({"inputs": []}, 400, "empty"),
        ({"inputs": ["好", ""]}, 400, "inputs[1] is empty"),
        ({"inputs": ["好", "   "]}, 400, "inputs[1] is empty"),
        ({"inputs": ["好", 3]}, 400, "inputs[1] must be a text"),
        ({"inputs": ["好", None]}, 400, "inputs[1] must be a text"),
        ({"inputs": [["好"]]}, 400, "inputs[0] must be a text"),
        ({"inputs": ["好"] * 65}, 413, "At most 64 inputs"),
        ({"inputs": ["好" * 5001]}, 413, "at most 5000"),
        ({"inputs": ["好"], "key": 42}, 400, "key must be"),
        ({"inputs": ["好"], "key": "k" * 201}, 400, "key is at most 200"),
    ],
)
def test_bad_inputs_are_refused_and_nothing_is_logged(deployed, engineer, body, status, words):
    response = predict(engineer, body=body)
    assert response.status_code == status, response.json()
    assert words in response.json()["detail"]
    assert flush_prediction_logs() and not PredictionLog.objects.exists()


def test_a_body_that_is_not_an_object_is_400(deployed, engineer):
    response = api_client_for(engineer).post("/api/v1/models/zh-serving/predict/", ["好"], format="json")
    assert response.status_code == 400 and response.json()["detail"]


@pytest.mark.parametrize("persona", ["manager", "reviewer", "outsider"])
def test_roles_without_serving_permission_are_refused(deployed, persona, request):
    user = request.getfixturevalue(persona)
    response = predict(user)
    assert response.status_code == 403 and response.json()["detail"]
    assert AuditEvent.objects.filter(
        action="prediction.request", outcome="denied", actor_username=user.username
    ).exists()
    assert flush_prediction_logs() and not PredictionLog.objects.exists()


def test_anonymous_callers_are_refused(deployed):
    response = predict(None)
    assert response.status_code in (401, 403) and response.json()["detail"]


def test_openapi_schema_renders_with_the_serving_endpoints(engineer):
    response = api_client_for(engineer).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    text = response.content.decode()
    for fragment in (
        "/api/v1/models/{name}/predict/",
        "/api/v1/models/{name}/feedback/",
        "PredictInput",
        "FeedbackInput",
        "X-Glassbox-Version",
    ):
        assert fragment in text, fragment


def test_prediction_ids_are_unique_uuids(deployed, engineer):
    answers = predict(engineer, body={"inputs": TEXTS * 10}).json()["predictions"]
    ids = [uuid.UUID(a["prediction_id"]) for a in answers]
    assert len(set(ids)) == len(ids) == 30
