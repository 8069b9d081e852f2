"""The manager dashboard: versions by state, open reviews and their age,
overdue re-certifications, recent audit events."""

from datetime import timedelta

import pytest
from django.utils import timezone

from governance.models import ReviewRequest
from registry.models import ModelVersion
from tests.conftest import page_client_for
from tests.governance.reviewing import decide, new_version, submitted_version


def dashboard_for(user):
    return page_client_for(user).get("/dashboard/")


def test_dashboard_counts_versions_by_state(engineer, reviewer, manager):
    new_version(uploader=engineer, name="fresh")
    submitted_version(uploader=engineer, name="waiting")
    approved = submitted_version(uploader=engineer, name="good")
    decide(reviewer, approved, "approve")
    rejected = submitted_version(uploader=engineer, name="bad")
    decide(reviewer, rejected, "reject", "worse than the baseline")

    response = dashboard_for(manager)

    assert response.status_code == 200
    counts = {value: count for value, _, count in response.context["versions_by_state"]}
    assert counts == {"registered": 1, "in_review": 1, "approved": 1, "rejected": 1, "deployed": 0, "retired": 0}
    assert 'class="count-approved">1<' in response.content.decode()


def test_dashboard_lists_open_reviews_with_their_age(engineer, manager):
    version = submitted_version(uploader=engineer, name="slow-review", risk_tier="high")
    ReviewRequest.objects.filter(version=version).update(opened_at=timezone.now() - timedelta(days=3, hours=2))

    page = dashboard_for(manager).content.decode()

    assert "slow-review v1" in page and "3\xa0days" in page and "0 / 2" in page and "shap, pfi" in page


def test_dashboard_shows_overdue_recertifications_only(engineer, reviewer, manager):
    overdue = submitted_version(uploader=engineer, name="stale-model")
    decide(reviewer, overdue, "approve")
    due_later = submitted_version(uploader=engineer, name="recent-model")
    decide(reviewer, due_later, "approve")
    today = timezone.now().date()
    ModelVersion.objects.filter(pk=overdue.pk).update(recertify_by=today - timedelta(days=10))

    response = dashboard_for(manager)

    assert [str(v) for v in response.context["overdue"]] == ["stale-model v1"]
    page = response.content.decode()
    assert "stale-model v1" in page and f"{today - timedelta(days=10):%Y-%m-%d}" in page and "1\xa0week" in page


def test_dashboard_shows_recent_audit_events(engineer, reviewer, manager):
    version = submitted_version(uploader=engineer, name="watched")
    decide(reviewer, version, "approve", "fine")

    events = list(dashboard_for(manager).context["recent_events"])

    # The manager's own login (auth.login) is recorded too; it is not what this test watches.
    actions = [e.action for e in events if not e.action.startswith("auth.")]
    assert actions[:3] == ["version.approve", "review.close", "review.approve"]


@pytest.mark.parametrize("persona", ["engineer", "reviewer", "outsider"])
def test_only_managers_open_the_dashboard(persona, request):
    assert dashboard_for(request.getfixturevalue(persona)).status_code == 403
