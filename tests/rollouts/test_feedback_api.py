"""POST /api/v1/models/{name}/feedback/: true labels of earlier predictions,
all or nothing, one per prediction, audited in per-sender summaries
(refusals at once)."""

import uuid

import pytest

from governance.models import AuditEvent
from rollouts import services
from rollouts.models import Feedback
from tests.conftest import api_client_for
from tests.rollouts.rollout_helpers import deploy


@pytest.fixture
def answers(served_model, engineer, serving_env):
    deploy(served_model, served_model.versions.get(number=1), actor=engineer)
    response = api_client_for(engineer).post(
        "/api/v1/models/zh-serving/predict/", {"inputs": ["质量很好，非常满意", "太差了，再也不买了"]}, format="json"
    )
    assert response.status_code == 200
    # Deliberately not flushed: feedback right after a prediction must find it.
    return response.json()["predictions"]


def feedback(user, items, model_name="zh-serving"):
    return api_client_for(user).post(f"/api/v1/models/{model_name}/feedback/", {"items": items}, format="json")


def test_feedback_is_stored_with_correctness_and_audited(answers, engineer2):
    items = [
        {"prediction_id": answers[0]["prediction_id"], "label": answers[0]["label"]},
        {
            "prediction_id": answers[1]["prediction_id"],
            "label": "positive" if answers[1]["label"] == "negative" else "negative",
        },
    ]
    response = feedback(engineer2, items)

    assert response.status_code == 201, response.json()
    assert response.json() == {"recorded": 2, "correct": 1, "incorrect": 1}
    stored = {str(f.prediction.prediction_id): f for f in Feedback.objects.select_related("prediction")}
    assert stored[answers[0]["prediction_id"]].correct is True
    assert stored[answers[1]["prediction_id"]].correct is False
    assert stored[answers[1]["prediction_id"]].created_by == engineer2
    # An observation: no event per call (the chain's lock would serialize
    # every sender); the next summary audits it.
    assert not AuditEvent.objects.filter(action__startswith="feedback.").exists()

    [event] = services.feedback_summarize()

    assert (event.action, event.actor_username, event.model_name) == ("feedback.summary", "eli", "zh-serving")
    assert (event.detail["items"], event.detail["correct"], event.detail["by_version"]) == (2, 1, {"1": 2})
    assert not Feedback.objects.filter(summarized_at__isnull=True).exists()
    assert services.feedback_summarize() == []


def test_a_second_feedback_on_a_prediction_is_409(answers, engineer):
    item = {"prediction_id": answers[0]["prediction_id"], "label": "positive"}
    assert feedback(engineer, [item]).status_code == 201
    response = feedback(engineer, [item])
    assert response.status_code == 409 and "already has feedback" in response.json()["detail"]
    assert Feedback.objects.count() == 1


def test_unknown_prediction_is_404_and_nothing_is_stored(answers, engineer):
    unknown = str(uuid.uuid4())
    items = [
        {"prediction_id": answers[0]["prediction_id"], "label": "positive"},
        {"prediction_id": unknown, "label": "negative"},
    ]
    response = feedback(engineer, items)
    assert response.status_code == 404 and f"unknown prediction {unknown}" in response.json()["detail"]
    assert not Feedback.objects.exists()
    assert AuditEvent.objects.filter(action="feedback.record", outcome="denied").exists()


def test_a_label_the_version_does_not_have_is_400_and_nothing_is_stored(answers, engineer):
    items = [
        {"prediction_id": answers[0]["prediction_id"], "label": "positive"},
        {"prediction_id": answers[1]["prediction_id"], "label": "neutral"},
    ]
    response = feedback(engineer, items)
    assert response.status_code == 400 and "'neutral' is not one of" in response.json()["detail"]
    assert not Feedback.objects.exists()


def test_a_prediction_of_another_model_is_unknown_here(answers, engineer):
    from tests.conftest import RegisteredModelFactory

    RegisteredModelFactory(name="other-model", created_by=engineer)
    response = feedback(engineer, [{"prediction_id": answers[0]["prediction_id"], "label": "positive"}], "other-model")
    assert response.status_code == 404 and not Feedback.objects.exists()


def test_unknown_model_is_404(answers, engineer):
    assert (
        feedback(engineer, [{"prediction_id": answers[0]["prediction_id"], "label": "positive"}], "nope").status_code
        == 404
    )


@pytest.mark.parametrize(
    "items, words",
    [
        ([], "non-empty list"),
        ("x", "non-empty list"),
        (["x"], "must be an object"),
        ([{"prediction_id": "not-a-uuid", "label": "positive"}], "is not a prediction id"),
        ([{"prediction_id": str(uuid.uuid4())}], "label must be"),
        ([{"prediction_id": str(uuid.uuid4()), "label": 1}], "label must be"),
    ],
)
def test_malformed_items_are_400(answers, engineer, items, words):
    response = feedback(engineer, items)
    assert response.status_code == 400 and words in response.json()["detail"]
    assert not Feedback.objects.exists()


def test_the_same_prediction_twice_in_one_call_is_400(answers, engineer):
    item = {"prediction_id": answers[0]["prediction_id"], "label": "positive"}
    response = feedback(engineer, [item, item])
    assert response.status_code == 400 and "twice" in response.json()["detail"]
    assert not Feedback.objects.exists()


@pytest.mark.parametrize("persona", ["manager", "reviewer", "outsider"])
def test_roles_without_feedback_permission_are_refused(answers, persona, request):
    user = request.getfixturevalue(persona)
    response = feedback(user, [{"prediction_id": answers[0]["prediction_id"], "label": "positive"}])
    assert response.status_code == 403 and response.json()["detail"]
    assert not Feedback.objects.exists()
    assert AuditEvent.objects.filter(action="feedback.record", outcome="denied", actor_username=user.username).exists()
