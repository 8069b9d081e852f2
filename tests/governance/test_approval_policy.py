"""The approval policy per risk tier lives in settings: approvals, required
evidence (explanation methods with a succeeded report) and the
re-certification period."""

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from explanations.selectors import succeeded_methods
from governance.models import AuditEvent, Decision
from governance.policy import approval_policy
from registry.models import ModelVersion
from tests.governance.reviewing import decide, new_version, submitted_version, version_path


def without_high_risk_evidence(settings):
    settings.GLASSBOX_APPROVAL_POLICY = {
        **settings.GLASSBOX_APPROVAL_POLICY,
        "high": {**settings.GLASSBOX_APPROVAL_POLICY["high"], "evidence": []},
    }


def test_default_policy_matches_the_issue():
    assert [(p.approvals, p.evidence, p.recertify_days) for p in map(approval_policy, ["low", "medium", "high"])] == [
        (1, (), 365),
        (2, (), 180),
        (2, ("shap", "pfi"), 90),
    ]


def test_high_risk_quorum_alone_does_not_approve_without_evidence(engineer, reviewer, reviewer2):
    version = submitted_version(uploader=engineer, risk_tier="high")

    responses = [decide(reviewer, version, "approve", "good"), decide(reviewer2, version, "approve", "good")]

    for response in responses:
        assert response.status_code == 409
        assert response.json()["missing_evidence"] == ["shap", "pfi"]
        assert "needs a succeeded explanation report for shap, pfi" in response.json()["detail"]
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.IN_REVIEW and version.recertify_by is None
    assert not Decision.objects.exists()
    assert AuditEvent.objects.filter(action="review.approve", outcome="denied").count() == 2


def test_high_risk_version_may_still_be_rejected_without_evidence(engineer, reviewer):
    version = submitted_version(uploader=engineer, risk_tier="high")

    assert decide(reviewer, version, "reject", "no explanations, no approval").status_code == 201
    assert ModelVersion.objects.get(pk=version.pk).status == "rejected"


def test_high_risk_quorum_approves_when_the_policy_requires_no_evidence(settings, engineer, reviewer, reviewer2):
    without_high_risk_evidence(settings)
    version = submitted_version(uploader=engineer, risk_tier="high")

    assert decide(reviewer, version, "approve", "good").json()["version_status"] == "in_review"
    response = decide(reviewer2, version, "approve", "good")

    assert response.status_code == 201 and response.json()["version_status"] == "approved"
    version.refresh_from_db()
    assert version.recertify_by == (timezone.now() + timedelta(days=90)).date()


def test_evidence_required_is_the_snapshot_taken_at_submit(settings, engineer, reviewer, reviewer2):
    # Submitted under a no-evidence policy: a later default does not block it.
    without_high_risk_evidence(settings)
    version = submitted_version(uploader=engineer, risk_tier="high")
    settings.GLASSBOX_APPROVAL_POLICY = {
        **settings.GLASSBOX_APPROVAL_POLICY,
        "high": {"approvals": 2, "evidence": ["shap"], "recertify_days": 90},
    }

    decide(reviewer, version, "approve")
    decide(reviewer2, version, "approve")

    assert ModelVersion.objects.get(pk=version.pk).status == "approved"


@pytest.mark.parametrize(("tier", "days"), [("low", 365), ("medium", 180)])
def test_recertification_date_follows_the_risk_tier(engineer, reviewer, reviewer2, tier, days):
    version = submitted_version(uploader=engineer, risk_tier=tier)

    for user in (reviewer, reviewer2)[: approval_policy(tier).approvals]:
        decide(user, version, "approve")

    version.refresh_from_db()
    assert version.status == "approved"
    assert version.recertify_by == (timezone.now() + timedelta(days=days)).date()


def test_quorum_is_read_from_settings(settings, engineer, reviewer, reviewer2):
    settings.GLASSBOX_APPROVAL_POLICY = {
        **settings.GLASSBOX_APPROVAL_POLICY,
        "low": {"approvals": 3, "evidence": [], "recertify_days": 30},
    }
    version = submitted_version(uploader=engineer, risk_tier="low")

    decide(reviewer, version, "approve")
    decide(reviewer2, version, "approve")

    assert ModelVersion.objects.get(pk=version.pk).status == "in_review"
    assert decide(reviewer, version, "approve").status_code == 409  # still no double counting


@pytest.mark.parametrize("entry", [None, {"approvals": 0, "recertify_days": 30}, {"approvals": "two"}])
def test_a_broken_policy_entry_is_improperly_configured(settings, entry):
    policy = dict(settings.GLASSBOX_APPROVAL_POLICY)
    if entry is None:
        policy.pop("medium")
    else:
        policy["medium"] = entry
    settings.GLASSBOX_APPROVAL_POLICY = policy

    with pytest.raises(ImproperlyConfigured):
        approval_policy("medium")


def test_a_version_without_reports_has_no_evidence(engineer):
    # Only succeeded explanation reports count (tests/explanations/test_report_evidence.py).
    assert succeeded_methods(version=new_version(uploader=engineer)) == set()


def test_version_json_names_the_missing_evidence(api, engineer, reviewer):
    version = submitted_version(uploader=engineer, risk_tier="high")

    review = api(reviewer).get(version_path(version)).json()["review"]

    assert review["required_evidence"] == ["shap", "pfi"]
    assert review["missing_evidence"] == ["shap", "pfi"]
