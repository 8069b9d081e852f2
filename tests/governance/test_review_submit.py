"""Submitting a version for review: `POST .../submit/` and review_submit."""

import pytest
from django.db import IntegrityError, transaction

from glassbox.errors import Conflict
from governance import roles, services
from governance.models import AuditEvent, ReviewRequest
from registry.models import ModelVersion
from tests.governance.reviewing import actions, decide, new_version, submitted_version, version_path


def submit(api, user, version):
    return api(user).post(version_path(version, "submit/"))


def test_uploader_submits_version_and_it_moves_to_in_review(api, engineer):
    version = new_version(uploader=engineer, risk_tier="medium")

    response = submit(api, engineer, version)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "in_review"
    assert body["review"]["status"] == "open"
    assert body["review"]["opened_by"] == "erin"
    assert body["review"]["required_approvals"] == 2
    assert body["review"]["approvals"] == 0 and body["review"]["decisions"] == []
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.IN_REVIEW
    review = ReviewRequest.objects.get(version=version)
    assert review.opened_by == engineer and review.closed_at is None
    assert actions(model_name=version.model.name) == [("version.submit", "ok"), ("review.open", "ok")]
    moved = AuditEvent.objects.get(action="version.submit")
    assert moved.changes == {"before": {"status": "registered"}, "after": {"status": "in_review"}}
    assert moved.actor == engineer and moved.version_number == version.number


def test_any_engineer_may_submit_a_colleagues_version(api, engineer, engineer2):
    version = new_version(uploader=engineer)

    response = submit(api, engineer2, version)

    assert response.status_code == 201
    assert ReviewRequest.objects.get(version=version).opened_by == engineer2


@pytest.mark.parametrize("persona", ["reviewer", "manager"])
def test_reviewers_and_managers_cannot_submit(api, engineer, persona, request):
    user = request.getfixturevalue(persona)
    version = new_version(uploader=engineer)

    response = submit(api, user, version)

    assert response.status_code == 403
    assert response.json() == {"detail": "Only engineers may submit versions for review.", "code": "permission_denied"}
    version.refresh_from_db()
    assert version.status == "registered" and not ReviewRequest.objects.exists()
    event = AuditEvent.objects.get(action="review.submit")
    assert event.outcome == "denied" and event.actor == user
    assert event.detail["reason"] == "Only engineers may submit versions for review."


def test_outsider_cannot_submit_and_the_attempt_is_recorded(api, engineer, outsider):
    version = new_version(uploader=engineer)

    response = submit(api, outsider, version)

    assert response.status_code == 403 and response.json()["detail"]
    version.refresh_from_db()
    assert version.status == "registered"
    event = AuditEvent.objects.get(action="review.submit")
    assert (event.outcome, event.actor) == ("denied", outsider)
    assert (event.model_name, event.version_number) == (version.model.name, version.number)


def test_submitting_a_version_already_in_review_is_409_with_current_state(api, engineer):
    version = submitted_version(uploader=engineer)

    response = submit(api, engineer, version)

    assert response.status_code == 409
    assert response.json()["current_status"] == "in_review"
    assert "only a registered version can be submitted" in response.json()["detail"]
    assert ReviewRequest.objects.filter(version=version).count() == 1
    assert actions(action="review.submit") == [("review.submit", "denied")]


def test_a_rejected_version_can_never_be_submitted_again(api, engineer, reviewer):
    version = submitted_version(uploader=engineer)
    assert decide(reviewer, version, "reject", "fails on negations").status_code == 201

    response = submit(api, engineer, version)

    assert response.status_code == 409
    assert response.json()["current_status"] == "rejected"
    assert ReviewRequest.objects.filter(version=version).count() == 1


@pytest.mark.parametrize(
    ("tier", "approvals", "evidence"),
    [("low", 1, []), ("medium", 2, []), ("high", 2, ["shap", "pfi"])],
)
def test_review_takes_its_bar_from_the_risk_tier_policy(api, engineer, tier, approvals, evidence):
    version = new_version(uploader=engineer, risk_tier=tier)

    review = submit(api, engineer, version).json()["review"]

    assert review["required_approvals"] == approvals
    assert review["required_evidence"] == evidence
    assert review["missing_evidence"] == evidence  # no explanation report exists yet


def test_a_policy_change_after_submit_does_not_move_the_bar(engineer, settings):
    version = submitted_version(uploader=engineer, risk_tier="medium")
    settings.GLASSBOX_APPROVAL_POLICY = {
        **settings.GLASSBOX_APPROVAL_POLICY,
        "medium": {"approvals": 5, "evidence": ["lime"], "recertify_days": 30},
    }

    review = ReviewRequest.objects.get(version=version)

    assert (review.required_approvals, review.required_evidence) == (2, [])


def test_unknown_version_is_404(api, engineer):
    version = new_version(uploader=engineer)

    response = api(engineer).post(f"/api/v1/models/{version.model.name}/versions/99/submit/")

    assert response.status_code == 404 and response.json()["detail"]


def test_the_database_allows_one_open_review_per_version(engineer):
    version = submitted_version(uploader=engineer)

    with pytest.raises(IntegrityError), transaction.atomic():
        ReviewRequest.objects.create(version=version, opened_by=engineer, required_approvals=1)


def test_service_refuses_with_conflict_naming_the_current_state(engineer):
    version = new_version(uploader=engineer)
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.RETIRED)

    with pytest.raises(Conflict) as refused:
        services.review_submit(actor=engineer, version=version)

    assert refused.value.extra == {"current_status": "retired"}
    assert not ReviewRequest.objects.exists()


def test_engineers_hold_the_submit_permission_and_reviewers_the_decide_permission(engineer, reviewer):
    assert roles.ENGINEER in roles.roles_of(engineer)
    assert engineer.has_perm("governance.add_reviewrequest") and not engineer.has_perm("governance.add_decision")
    assert reviewer.has_perm("governance.add_decision") and not reviewer.has_perm("governance.add_reviewrequest")
