"""Independent validation: a reviewer in the team that owns the model may not
approve its versions; the policy may also ask that one approver of a
version belongs to no team at all."""

from governance.models import AuditEvent, Decision
from registry.models import ModelVersion
from tests.conftest import team_member
from tests.governance.reviewing import decide, submitted_version


def independent_policy(settings, tier: str = "medium"):
    settings.GLASSBOX_APPROVAL_POLICY = {
        **settings.GLASSBOX_APPROVAL_POLICY,
        tier: {**settings.GLASSBOX_APPROVAL_POLICY[tier], "require_independent_approver": True},
    }


def test_a_reviewer_in_the_owning_team_cannot_approve_and_is_told_why(engineer, reviewer):
    team_member(reviewer, "default", "viewer")
    version = submitted_version(uploader=engineer)

    response = decide(reviewer, version, "approve", "looks fine")

    assert response.status_code == 403 and response.json()["code"] == "approver_not_independent"
    assert "member of team default, which owns" in response.json()["detail"]
    assert ModelVersion.objects.get(pk=version.pk).status == "in_review" and not Decision.objects.exists()
    event = AuditEvent.objects.get(action="review.approve", outcome="denied")
    assert "independent of development" in event.detail["reason"]


def test_a_reviewer_in_the_owning_team_may_still_reject(engineer, reviewer):
    team_member(reviewer, "default", "viewer")
    version = submitted_version(uploader=engineer)

    assert decide(reviewer, version, "reject", "the card is empty").status_code == 201


def test_a_reviewer_in_another_team_may_approve(engineer, reviewer):
    team_member(reviewer, "payments", "engineer")
    version = submitted_version(uploader=engineer)

    assert decide(reviewer, version, "approve", "fine").status_code == 201
    assert ModelVersion.objects.get(pk=version.pk).status == "approved"


def test_policy_can_require_an_approver_outside_every_team(settings, engineer, reviewer, reviewer2):
    independent_policy(settings)
    team_member(reviewer, "payments", "engineer")
    team_member(reviewer2, "risk", "viewer")
    version = submitted_version(uploader=engineer, risk_tier="medium")

    first = decide(reviewer, version, "approve", "fine")  # not the quorum yet: accepted
    completing = decide(reviewer2, version, "approve", "fine")

    assert first.status_code == 201
    assert completing.status_code == 409 and completing.json()["code"] == "independent_approver_required"
    assert "belongs to no team" in completing.json()["detail"]
    assert ModelVersion.objects.get(pk=version.pk).status == "in_review"

    reviewer2.team_memberships.all().delete()  # reviewer2 leaves every team
    assert decide(reviewer2, version, "approve", "fine").status_code == 201
    assert ModelVersion.objects.get(pk=version.pk).status == "approved"


def test_the_independence_rule_is_copied_onto_the_review_when_it_opens(settings, engineer, reviewer, reviewer2):
    independent_policy(settings)
    version = submitted_version(uploader=engineer, risk_tier="medium")
    opened = AuditEvent.objects.get(action="review.open")
    assert opened.changes["after"]["require_independent_approver"] is True

    settings.GLASSBOX_APPROVAL_POLICY = {
        **settings.GLASSBOX_APPROVAL_POLICY,
        "medium": {"approvals": 2, "recertify_days": 180},
    }
    team_member(reviewer, "payments", "engineer")
    team_member(reviewer2, "payments", "engineer")
    decide(reviewer, version, "approve", "fine")
    assert decide(reviewer2, version, "approve", "fine").status_code == 409
