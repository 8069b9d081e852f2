"""The browser side of the review workflow: the submit button, the review
queue and the review page, with sessions and CSRF enforced."""

import re

import pytest
from django.test import Client

from governance import roles
from governance.models import AuditEvent, Decision, ReviewRequest
from registry.models import ModelVersion
from tests.conftest import page_client_for
from tests.governance.reviewing import decide, give_role, new_version, submitted_version


def page_url(version, suffix: str = "") -> str:
    return f"/models/{version.model.name}/versions/{version.number}/{suffix}"


def button(html: str, value: str) -> str:
    match = re.search(rf'<button type="submit" name="decision" value="{value}"[^>]*>', html)
    assert match, f"no {value} button"
    return match.group(0)


def test_engineer_submits_from_the_version_page_with_csrf(engineer):
    version = new_version(uploader=engineer, risk_tier="medium")
    client = page_client_for(engineer, enforce_csrf=True)
    page = client.get(page_url(version))
    assert "Submit for review" in page.content.decode()

    response = client.post(page_url(version, "submit/"), {"csrfmiddlewaretoken": page.context["csrf_token"]})

    assert response.status_code == 302 and response["Location"] == version.get_absolute_url()
    assert ModelVersion.objects.get(pk=version.pk).status == "in_review"
    after = client.get(page_url(version)).content.decode()
    assert "Submitted" in after and "needs 2 approval(s)" in after
    assert "Submit for review" not in after and "Open the review" in after


def test_submit_without_csrf_token_is_refused(engineer):
    version = new_version(uploader=engineer)

    response = page_client_for(engineer, enforce_csrf=True).post(page_url(version, "submit/"))

    assert response.status_code == 403
    assert ModelVersion.objects.get(pk=version.pk).status == "registered"


def test_reviewer_sees_no_submit_button_and_cannot_submit(engineer, reviewer):
    version = new_version(uploader=engineer)
    client = page_client_for(reviewer)

    assert "Submit for review" not in client.get(page_url(version)).content.decode()
    assert client.post(page_url(version, "submit/")).status_code == 403
    assert ModelVersion.objects.get(pk=version.pk).status == "registered"
    assert AuditEvent.objects.get(action="review.submit").outcome == "denied"


def test_submitting_twice_from_the_page_shows_why(engineer):
    version = submitted_version(uploader=engineer)

    response = page_client_for(engineer).post(page_url(version, "submit/"), follow=True)

    assert "only a registered version can be submitted for review" in response.content.decode()
    assert ReviewRequest.objects.filter(version=version).count() == 1


def test_review_queue_lists_open_reviews_oldest_first(engineer, reviewer):
    first = submitted_version(uploader=engineer, name="first-model")
    submitted_version(uploader=engineer, name="second-model", risk_tier="high")
    done = submitted_version(uploader=engineer, name="done-model")
    decide(reviewer, done, "approve")

    page = page_client_for(reviewer).get("/reviews/").content.decode()

    assert page.index("first-model v1") < page.index("second-model v1")
    assert "done-model" not in page
    assert f'href="{page_url(first, "review/")}"' in page and "Review now" in page
    assert "shap, pfi" in page  # the high-risk row names its missing evidence


def test_queue_tells_the_uploader_why_they_cannot_approve(engineer):
    uploader = give_role(engineer, roles.REVIEWER)
    submitted_version(uploader=uploader, name="own-model")

    page = page_client_for(uploader).get("/reviews/").content.decode()

    assert "You uploaded own-model v1; another reviewer must decide on it." in page


def test_nav_links_follow_the_roles(reviewer, manager, engineer):
    assert 'href="/reviews/"' in page_client_for(reviewer).get("/models/").content.decode()
    assert 'href="/dashboard/"' not in page_client_for(reviewer).get("/models/").content.decode()
    assert 'href="/dashboard/"' in page_client_for(manager).get("/models/").content.decode()


def test_review_page_shows_card_metrics_digest_and_decisions(engineer, reviewer, reviewer2):
    version = submitted_version(uploader=engineer, risk_tier="medium")
    ModelVersion.objects.filter(pk=version.pk).update(intended_use="评论情感分类", metrics={"accuracy": 0.87})
    decide(reviewer, version, "approve", "<b>calibrated</b> on the holdout")

    page = page_client_for(reviewer2).get(page_url(version, "review/")).content.decode()

    assert "评论情感分类" in page and "accuracy" in page and "0.87" in page
    assert version.artifact_sha256 in page
    assert "rita" in page and "&lt;b&gt;calibrated&lt;/b&gt; on the holdout" in page
    assert "1 of 2 required" in page
    assert "disabled" not in button(page, "approve") and "disabled" not in button(page, "reject")


def test_approve_button_is_disabled_and_says_why_for_the_uploader(engineer):
    uploader = give_role(engineer, roles.REVIEWER)
    version = submitted_version(uploader=uploader)

    page = page_client_for(uploader).get(page_url(version, "review/")).content.decode()

    approve = button(page, "approve")
    assert "disabled" in approve and "another reviewer must decide" in approve
    assert f"You cannot approve: You uploaded {version}; another reviewer must decide on it." in page


def test_approve_button_is_disabled_for_missing_evidence_but_reject_is_not(engineer, reviewer):
    version = submitted_version(uploader=engineer, risk_tier="high")

    page = page_client_for(reviewer).get(page_url(version, "review/")).content.decode()

    assert "disabled" in button(page, "approve")
    assert "needs a succeeded explanation report for shap, pfi" in page
    assert "disabled" not in button(page, "reject")


def test_engineer_sees_the_review_but_both_buttons_are_disabled(engineer, engineer2):
    version = submitted_version(uploader=engineer)

    page = page_client_for(engineer2).get(page_url(version, "review/")).content.decode()

    assert "disabled" in button(page, "approve") and "disabled" in button(page, "reject")
    assert "You cannot approve: Only reviewers may decide on versions." in page


def test_reviewer_approves_through_the_form_with_csrf(engineer, reviewer):
    version = submitted_version(uploader=engineer)
    client = page_client_for(reviewer, enforce_csrf=True)
    token = client.get(page_url(version, "review/")).context["csrf_token"]

    response = client.post(
        page_url(version, "review/"), {"decision": "approve", "comment": "good", "csrfmiddlewaretoken": token}
    )

    assert response.status_code == 302
    assert ModelVersion.objects.get(pk=version.pk).status == "approved"
    assert Decision.objects.get().reviewer == reviewer
    page = client.get(response["Location"]).content.decode()
    assert "Recorded your approval of" in page and "Your decision" not in page  # the review is closed


def test_decision_form_without_csrf_token_is_refused(engineer, reviewer):
    version = submitted_version(uploader=engineer)

    response = page_client_for(reviewer, enforce_csrf=True).post(page_url(version, "review/"), {"decision": "approve"})

    assert response.status_code == 403
    assert not Decision.objects.exists()


def test_reject_without_comment_in_the_form_is_400_and_keeps_the_review_open(engineer, reviewer):
    version = submitted_version(uploader=engineer)

    response = page_client_for(reviewer).post(page_url(version, "review/"), {"decision": "reject", "comment": " "})

    assert response.status_code == 400
    assert "A reject needs a comment that says why." in response.content.decode()
    assert ModelVersion.objects.get(pk=version.pk).status == "in_review"
    assert AuditEvent.objects.get(action="review.reject").outcome == "denied"


def test_review_page_of_a_version_never_submitted(engineer, reviewer):
    version = new_version(uploader=engineer)

    page = page_client_for(reviewer).get(page_url(version, "review/")).content.decode()

    assert "has not been submitted for review" in page and "Your decision" not in page


@pytest.mark.parametrize("path", ["/reviews/", "REVIEW", "DOSSIER", "DOSSIER_JSON", "/dashboard/"])
def test_outsider_gets_403_on_every_review_page(engineer, outsider, path):
    version = submitted_version(uploader=engineer)
    path = {
        "REVIEW": page_url(version, "review/"),
        "DOSSIER": page_url(version, "dossier/"),
        "DOSSIER_JSON": page_url(version, "dossier.json"),
    }.get(path, path)

    assert page_client_for(outsider).get(path).status_code == 403


def test_outsider_cannot_decide_or_submit_through_the_pages(engineer, outsider):
    version = submitted_version(uploader=engineer)
    client = page_client_for(outsider)

    assert client.post(page_url(version, "review/"), {"decision": "approve"}).status_code == 403
    assert client.post(page_url(version, "submit/")).status_code == 403
    assert ModelVersion.objects.get(pk=version.pk).status == "in_review"
    assert AuditEvent.objects.filter(actor_id=outsider.pk, outcome="denied").count() == 2


def test_anonymous_visitors_are_sent_to_log_in(engineer):
    version = submitted_version(uploader=engineer)
    for path in ["/reviews/", page_url(version, "review/"), page_url(version, "dossier/"), "/dashboard/"]:
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
