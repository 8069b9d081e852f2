"""Archiving a model (admins): it serves nothing and takes no uploads,
reviews or rollouts; a model with an active rollout cannot be archived;
unarchiving restores serving. Real serving: the demo TF-IDF pipeline."""

import io

import pytest

from governance import services as review_services
from governance.audit_actions import AuditAction
from governance.models import AuditEvent
from rollouts import services as rollout_services
from rollouts.models import Rollout
from tests.conftest import ModelVersionFactory, UserFactory, page_client_for
from tests.rollouts.rollout_helpers import deploy

PREDICT = "/api/v1/models/zh-serving/predict/"


@pytest.fixture
def admin(db):
    return UserFactory(username="ada", role="admin", team=False)


def test_an_archived_model_serves_nothing_takes_nothing_and_unarchive_restores_it(
    api, served_model, serving_env, engineer, engineer2, admin, demo_models, django_capture_on_commit_callbacks
):
    v1, v2 = served_model.versions.order_by("number")
    deploy(served_model, v1, actor=engineer)
    # A canary that never gets traffic here: not loaded.
    steps = [
        {"weight": 10, "shadow": False, "bake_seconds": 600},
        {"weight": 100, "shadow": False, "bake_seconds": 600},
    ]
    canary = rollout_services.rollout_start(actor=engineer, model=served_model, candidate=v2, steps=steps)
    client, root = api(engineer), api(admin)
    assert client.post(PREDICT, {"inputs": ["很好"]}, format="json").status_code == 200

    # An active rollout blocks the archive.
    refused = root.post("/api/v1/models/zh-serving/archive/")
    assert (refused.status_code, refused.json()["code"], refused.json()["rollout"]) == (
        409,
        "rollout_active",
        canary.pk,
    )
    aborted = client.post(f"/api/v1/rollouts/{canary.pk}/abort/", {"reason": "archiving"}, format="json")
    assert aborted.status_code == 200, aborted.json()
    # Only admins archive.
    assert client.post("/api/v1/models/zh-serving/archive/").status_code == 403

    # Archiving drops this process's serving caches on commit (others expire within a second).
    with django_capture_on_commit_callbacks(execute=True):
        archived = root.post("/api/v1/models/zh-serving/archive/")

    assert archived.status_code == 200 and archived.json()["archived"] is True and archived.json()["archived_at"]
    event = AuditEvent.objects.get(action=AuditAction.MODEL_ARCHIVE, outcome="ok")
    assert event.changes["before"] == {"archived_at": None} and event.actor_username == "ada"
    # Archiving again changes nothing and records nothing.
    assert root.post("/api/v1/models/zh-serving/archive/").status_code == 200
    assert AuditEvent.objects.filter(action=AuditAction.MODEL_ARCHIVE, outcome="ok").count() == 1

    predicted = client.post(PREDICT, {"inputs": ["很好"]}, format="json")
    assert predicted.status_code == 409 and predicted.json()["code"] == "model_archived"
    assert "archived" in predicted.json()["detail"]

    handle = io.BytesIO(demo_models["sklearn_skops"].read_bytes())
    handle.name = "model.skops"
    upload = client.post(
        "/api/v1/models/zh-serving/versions/", {"artifact": handle, "flavor": "sklearn"}, format="multipart"
    )
    assert upload.status_code == 409 and upload.json()["code"] == "model_archived"
    registered = ModelVersionFactory(model=served_model)
    submit = api(engineer2).post(f"/api/v1/models/zh-serving/versions/{registered.number}/submit/")
    assert submit.status_code == 409 and submit.json()["code"] == "model_archived"
    rollout = client.post("/api/v1/models/zh-serving/rollouts/", {"candidate": v2.number}, format="json")
    assert rollout.status_code == 409 and rollout.json()["code"] == "model_archived"
    assert Rollout.objects.filter(model=served_model).count() == 2

    # Lists and pages say so; the history stays readable.
    listed = {m["name"]: m["archived"] for m in client.get("/api/v1/models/").json()["results"]}
    assert listed == {"zh-serving": True}
    page = page_client_for(engineer).get("/models/zh-serving/").content.decode()
    assert "archived" in page and "Upload a version" not in page
    assert client.get("/api/v1/models/zh-serving/versions/").status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        restored = root.post("/api/v1/models/zh-serving/unarchive/")

    assert restored.status_code == 200 and restored.json()["archived"] is False
    assert AuditEvent.objects.filter(action=AuditAction.MODEL_UNARCHIVE, outcome="ok").count() == 1
    answer = client.post(PREDICT, {"inputs": ["很好"]}, format="json")
    assert answer.status_code == 200 and answer.json()["predictions"][0]["version"] == v1.number
    review_services.review_submit(actor=engineer2, version=registered)


def test_only_admins_unarchive(api, engineer, sentiment_model, admin):
    api(admin).post(f"/api/v1/models/{sentiment_model.name}/archive/")

    response = api(engineer).post(f"/api/v1/models/{sentiment_model.name}/unarchive/")

    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    sentiment_model.refresh_from_db()
    assert sentiment_model.is_archived
    assert AuditEvent.objects.filter(action=AuditAction.MODEL_UNARCHIVE, outcome="denied").exists()
