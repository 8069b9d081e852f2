"""PATCH /api/v1/models/{name}/ (description by the model's engineers, risk
tier by admins, audited with old and new values; raising the tier opens a
re-certification round of each approved or deployed version) and PATCH of a
version's card while it is registered."""

import pytest

from governance import services as review_services
from governance.audit_actions import AuditAction
from governance.models import AuditEvent, ReviewRequest
from registry.models import ModelVersion
from registry.services import version_move
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, UserFactory, approve, team_member


@pytest.fixture
def admin(db):
    return UserFactory(username="ada", role="admin", team=False)


@pytest.fixture
def model(engineer):
    return RegisteredModelFactory(name="zh-edit", created_by=engineer, description="first words")


def patch(api, user, path, body):
    return api(user).patch(path, body, format="json")


def test_engineer_of_the_team_edits_the_description_audited(api, engineer, model):
    response = patch(api, engineer, "/api/v1/models/zh-edit/", {"description": "better words"})

    assert response.status_code == 200, response.json()
    assert response.json()["description"] == "better words"
    event = AuditEvent.objects.get(action=AuditAction.MODEL_UPDATE, outcome="ok")
    assert event.changes == {"before": {"description": "first words"}, "after": {"description": "better words"}}
    assert (event.actor_username, event.model_name) == ("erin", "zh-edit")


@pytest.mark.parametrize(
    "who, body, status, code",
    [
        ("viewer", {"description": "x"}, 403, "permission_denied"),
        ("other_engineer", {"description": "x"}, 404, "not_found"),
        ("engineer", {"risk_tier": "high"}, 403, "permission_denied"),
        ("admin", {"risk_tier": "extreme"}, 400, "validation_error"),
        ("engineer", {}, 400, "invalid_input"),
    ],
)
def test_refusals_of_a_model_edit(api, engineer, model, admin, who, body, status, code):
    users = {
        "engineer": engineer,
        "admin": admin,
        "viewer": UserFactory(username="vic", team=("default", "viewer")),
        "other_engineer": UserFactory(username="otto", role="engineer", team=("payments", "engineer")),
    }

    response = patch(api, users[who], "/api/v1/models/zh-edit/", body)

    assert (response.status_code, response.json()["code"]) == (status, code), response.json()
    model.refresh_from_db()
    assert (model.description, model.risk_tier) == ("first words", "low")
    if status == 403:
        assert AuditEvent.objects.filter(action=AuditAction.MODEL_UPDATE, outcome="denied").exists()


def test_raising_the_risk_tier_opens_a_recertification_round_of_approved_and_deployed_versions(
    api, engineer, engineer2, reviewer, model, admin
):
    approved = approve(ModelVersionFactory(model=model), submitter=engineer2, reviewer=reviewer)
    deployed = approve(ModelVersionFactory(model=model), submitter=engineer2, reviewer=reviewer)
    version_move(
        actor=engineer, version=deployed, to_status=ModelVersion.Status.DEPLOYED, action=AuditAction.VERSION_DEPLOY
    )
    registered = ModelVersionFactory(model=model)

    response = patch(api, admin, "/api/v1/models/zh-edit/", {"risk_tier": "high"})

    assert response.status_code == 200 and response.json()["risk_tier"] == "high"
    rounds = ReviewRequest.objects.filter(kind=ReviewRequest.Kind.RECERTIFICATION, status=ReviewRequest.Status.OPEN)
    assert sorted(r.version.number for r in rounds) == [approved.number, deployed.number]
    # High risk's bar: two approvals and fresh evidence.
    assert all(r.required_approvals == 2 and r.required_evidence for r in rounds)
    # Statuses untouched: the deployed version keeps serving meanwhile.
    statuses = dict(model.versions.values_list("number", "status"))
    assert statuses == {approved.number: "approved", deployed.number: "deployed", registered.number: "registered"}
    event = AuditEvent.objects.get(action=AuditAction.MODEL_UPDATE, outcome="ok")
    assert event.changes == {"before": {"risk_tier": "low"}, "after": {"risk_tier": "high"}}
    assert [r["version"] for r in event.detail["recertification_rounds"]] == [approved.number, deployed.number]


def test_lowering_the_risk_tier_opens_no_round(api, engineer2, reviewer, reviewer2, engineer, admin):
    model = RegisteredModelFactory(name="zh-high", created_by=engineer, risk_tier="medium")
    version = ModelVersionFactory(model=model)
    review_services.review_submit(actor=engineer2, version=version)
    for who in (reviewer, reviewer2):  # medium risk: two approvals
        review_services.decision_record(actor=who, version=version, decision="approve", comment="fine")
    version.refresh_from_db()
    assert version.status == "approved"

    response = patch(api, admin, "/api/v1/models/zh-high/", {"risk_tier": "low"})

    assert response.status_code == 200 and response.json()["risk_tier"] == "low"
    assert not ReviewRequest.objects.filter(kind=ReviewRequest.Kind.RECERTIFICATION).exists()


def test_a_registered_versions_card_is_edited_audited(api, engineer, model):
    version = ModelVersionFactory(model=model, limitations="")
    path = f"/api/v1/models/zh-edit/versions/{version.number}/"

    response = patch(api, engineer, path, {"limitations": "短文本只", "intended_use": "客服评论"})

    assert response.status_code == 200, response.json()
    assert response.json()["card"]["limitations"] == "短文本只"
    event = AuditEvent.objects.get(action=AuditAction.VERSION_CARD_UPDATE, outcome="ok")
    assert event.changes["after"] == {"limitations": "短文本只", "intended_use": "客服评论"}
    assert event.version_number == version.number


def test_a_submitted_versions_card_is_frozen(api, engineer, engineer2, model):
    version = ModelVersionFactory(model=model)
    review_services.review_submit(actor=engineer2, version=version)

    response = patch(api, engineer, f"/api/v1/models/zh-edit/versions/{version.number}/", {"limitations": "later"})

    assert response.status_code == 409
    assert response.json()["code"] == "version_not_editable" and response.json()["current_status"] == "in_review"
    version.refresh_from_db()
    assert version.limitations != "later"


def test_a_viewer_may_not_edit_a_card(api, model):
    viewer = UserFactory(username="vic")
    team_member(viewer, "default", "viewer")
    version = ModelVersionFactory(model=model)

    response = patch(api, viewer, f"/api/v1/models/zh-edit/versions/{version.number}/", {"limitations": "x"})

    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
