"""Reviewers' decisions: `POST/GET .../decisions/` and decision_record.
Separation of duties, quorum, final rejects, and every bad input refused
with a JSON detail, no state change and a denied audit event."""

from datetime import timedelta

import pytest
from django.utils import timezone

from governance import roles, services
from governance.models import AuditEvent, Decision, ReviewRequest
from registry.models import ModelVersion
from tests.conftest import UserFactory, api_client_for
from tests.governance.reviewing import (
    actions,
    decide,
    give_role,
    new_version,
    open_review,
    submitted_version,
    version_path,
)


def assert_refused_without_change(response, version, *, status: int, action: str, actor) -> dict:
    """The refusal's JSON, after checking nothing moved and the attempt is on the trail."""
    assert response.status_code == status, response.json()
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    before = ModelVersion.objects.get(pk=version.pk)
    assert before.status == version.status and before.recertify_by is None
    event = AuditEvent.objects.filter(action=action).latest("id")
    assert (event.outcome, event.actor_id, event.detail["reason"]) == ("denied", actor.pk, body["detail"])
    assert event.detail["status_code"] == status
    assert (event.model_name, event.version_number) == (version.model.name, version.number)
    return body


def test_low_risk_version_is_approved_by_one_reviewer(engineer, reviewer):
    version = submitted_version(uploader=engineer, risk_tier="low")

    response = decide(reviewer, version, "approve", "metrics hold on the holdout")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["reviewer"], body["decision"], body["comment"]) == ("rita", "approve", "metrics hold on the holdout")
    assert body["version_status"] == "approved"
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.APPROVED
    assert version.recertify_by == (timezone.now() + timedelta(days=365)).date()
    review = ReviewRequest.objects.get(version=version)
    assert review.status == "approved" and review.closed_at is not None
    assert actions(actor=reviewer) == [("review.approve", "ok"), ("review.close", "ok"), ("version.approve", "ok")]
    approved = AuditEvent.objects.get(action="version.approve")
    assert approved.changes == {
        "before": {"status": "in_review", "recertify_by": None},
        "after": {"status": "approved", "recertify_by": version.recertify_by.isoformat()},
    }
    assert approved.detail["approved_by"] == ["rita"]


def test_medium_risk_needs_two_approvals_from_different_reviewers(engineer, reviewer, reviewer2):
    version = submitted_version(uploader=engineer, risk_tier="medium")

    first = decide(reviewer, version, "approve")
    assert first.status_code == 201 and first.json()["version_status"] == "in_review"
    again = decide(reviewer, version, "approve")
    assert again.status_code == 409  # the same reviewer never counts twice
    assert ModelVersion.objects.get(pk=version.pk).status == "in_review"

    second = decide(reviewer2, version, "approve", "agree")

    assert second.status_code == 201 and second.json()["version_status"] == "approved"
    assert sorted(Decision.objects.values_list("reviewer__username", flat=True)) == ["ravi", "rita"]
    assert AuditEvent.objects.get(action="version.approve").detail["approved_by"] == ["rita", "ravi"]


def test_uploader_cannot_approve_own_version(engineer):
    uploader = give_role(engineer, roles.REVIEWER)  # holds both roles
    version = submitted_version(uploader=uploader)

    response = decide(uploader, version, "approve", "looks fine to me")

    body = assert_refused_without_change(response, version, status=403, action="review.approve", actor=uploader)
    assert "You uploaded" in body["detail"]
    assert not Decision.objects.exists()


def test_submitter_cannot_approve_the_version_they_submitted(engineer, engineer2):
    submitter = give_role(engineer2, roles.REVIEWER)
    version = new_version(uploader=engineer)
    services.review_submit(actor=submitter, version=version)
    version.refresh_from_db()

    response = decide(submitter, version, "approve")

    body = assert_refused_without_change(response, version, status=403, action="review.approve", actor=submitter)
    assert "You submitted" in body["detail"]


def test_reviewer_cannot_decide_twice(engineer, reviewer):
    version = submitted_version(uploader=engineer, risk_tier="medium")
    assert decide(reviewer, version, "approve").status_code == 201

    response = decide(reviewer, version, "reject", "changed my mind")

    body = assert_refused_without_change(response, version, status=409, action="review.reject", actor=reviewer)
    assert "already decided" in body["detail"]
    assert Decision.objects.get().decision == "approve"


@pytest.mark.parametrize("persona", ["engineer2", "manager"])
def test_non_reviewer_cannot_decide(engineer, persona, request):
    user = request.getfixturevalue(persona)
    version = submitted_version(uploader=engineer)

    response = decide(user, version, "approve", "ship it")

    body = assert_refused_without_change(response, version, status=403, action="review.approve", actor=user)
    assert body["detail"] == "Only reviewers may decide on versions."


def test_outsider_deciding_is_refused_and_recorded(engineer, outsider):
    version = submitted_version(uploader=engineer)

    response = decide(outsider, version, "approve", "ship it")

    assert response.status_code == 403
    assert ModelVersion.objects.get(pk=version.pk).status == "in_review"
    event = AuditEvent.objects.get(action="review.decide")
    assert (event.outcome, event.actor, event.version_number) == ("denied", outsider, version.number)


@pytest.mark.parametrize("state", ["registered", "approved", "deployed", "retired"])
def test_deciding_on_a_version_not_in_review_is_409_with_current_state(engineer, reviewer, state):
    version = new_version(uploader=engineer)
    ModelVersion.objects.filter(pk=version.pk).update(status=state)
    version.refresh_from_db()

    response = decide(reviewer, version, "approve", "ok")

    body = assert_refused_without_change(response, version, status=409, action="review.approve", actor=reviewer)
    assert body["current_status"] == state
    assert f"is {state}" in body["detail"]


@pytest.mark.parametrize("word", ["approved", "APPROVE", "", "abstain"])
def test_unknown_decision_word_is_400(engineer, reviewer, word):
    version = submitted_version(uploader=engineer)

    response = decide(reviewer, version, word, "a comment")

    body = assert_refused_without_change(response, version, status=400, action="review.decide", actor=reviewer)
    assert "decision must be 'approve' or 'reject'" in body["detail"]


@pytest.mark.parametrize("comment", ["", "   \n "])
def test_reject_without_comment_is_400(engineer, reviewer, comment):
    version = submitted_version(uploader=engineer)

    response = decide(reviewer, version, "reject", comment)

    body = assert_refused_without_change(response, version, status=400, action="review.reject", actor=reviewer)
    assert body["detail"] == "A reject needs a comment that says why."
    assert open_review(version).decisions.count() == 0


def test_overlong_comment_is_400(engineer, reviewer):
    version = submitted_version(uploader=engineer)

    response = decide(reviewer, version, "approve", "x" * 10_001)

    assert_refused_without_change(response, version, status=400, action="review.approve", actor=reviewer)


def test_approve_without_comment_is_accepted(engineer, reviewer):
    version = submitted_version(uploader=engineer)

    assert decide(reviewer, version, "approve").status_code == 201
    assert Decision.objects.get().comment == ""


def test_one_reject_closes_the_review_as_rejected_for_good(engineer, reviewer, reviewer2):
    version = submitted_version(uploader=engineer, risk_tier="medium")
    assert decide(reviewer, version, "approve", "fine").status_code == 201

    response = decide(reviewer2, version, "reject", "fails on sarcasm")

    assert response.status_code == 201 and response.json()["version_status"] == "rejected"
    version.refresh_from_db()
    assert version.status == "rejected" and version.recertify_by is None
    assert ReviewRequest.objects.get(version=version).status == "rejected"
    assert actions(actor=reviewer2) == [("review.reject", "ok"), ("review.close", "ok"), ("version.reject", "ok")]
    assert AuditEvent.objects.get(action="version.reject").detail["comment"] == "fails on sarcasm"
    # Final: nobody can decide any more, and the version cannot be resubmitted.
    third = UserFactory(username="rosa", role=roles.REVIEWER)
    late = decide(third, version, "approve", "too late")
    assert late.status_code == 409 and late.json()["current_status"] == "rejected"
    assert api_client_for(engineer).post(version_path(version, "submit/")).status_code == 409


def test_decisions_are_listed_with_their_comments(engineer, reviewer, reviewer2, manager):
    version = submitted_version(uploader=engineer, risk_tier="medium")
    decide(reviewer, version, "approve", "calibrated well")
    decide(reviewer2, version, "approve", "agree with rita")

    response = api_client_for(manager).get(version_path(version, "decisions/"))

    assert response.status_code == 200
    assert [(d["reviewer"], d["decision"], d["comment"]) for d in response.json()["results"]] == [
        ("rita", "approve", "calibrated well"),
        ("ravi", "approve", "agree with rita"),
    ]


def test_outsider_cannot_list_decisions(engineer, outsider):
    version = submitted_version(uploader=engineer)

    assert api_client_for(outsider).get(version_path(version, "decisions/")).status_code == 403


def test_service_approves_via_the_same_rules(engineer, reviewer):
    version = submitted_version(uploader=engineer)

    decision = services.decision_record(actor=reviewer, version=version, decision="approve", comment="  ok  ")

    assert decision.comment == "ok"
    assert version.status == "approved"  # the caller's instance follows the move
    assert ModelVersion.objects.get(pk=version.pk).status == "approved"
