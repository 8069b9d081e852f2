"""Re-certification that binds: a version past its date (or whose
re-certification was rejected) cannot start a rollout; a re-certification
round is a review of an approved or deployed version that leaves its status
alone; a deployed version that lapsed or was refused raises an alert and
keeps serving."""

from datetime import timedelta

import pytest
from django.utils import timezone

from governance import services
from governance.models import AuditEvent, ReviewRequest
from registry.models import ModelVersion
from rollouts.models import Alert, Rollout, ServingState
from rollouts.services import certification_check
from rollouts.tasks import check_certifications
from tests.conftest import ModelVersionFactory, api_client_for, page_client_for, wait_for
from tests.explanations.reporting import make_report
from tests.governance.reviewing import actions, decide, submitted_version, version_path
from tests.rollouts.rollout_helpers import deploy_first


def approved(*, uploader, reviewers, risk_tier="low", name=None) -> ModelVersion:
    version = submitted_version(uploader=uploader, risk_tier=risk_tier, name=name)
    for reviewer in reviewers:
        assert decide(reviewer, version, "approve", "checked").status_code == 201
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.APPROVED
    return version


def lapse(version: ModelVersion, *, days: int) -> None:
    """Move the re-certification date into the past: the approval held until `days` ago."""
    ModelVersion.objects.filter(pk=version.pk).update(recertify_by=timezone.now().date() - timedelta(days=days))
    version.refresh_from_db()


def recertify(user, version: ModelVersion):
    return api_client_for(user).post(version_path(version, "recertify/"))


@pytest.fixture
def two_versions(engineer, reviewer):
    """v1 deployed (a first deployment), v2 approved: ready to roll out."""
    v1 = approved(uploader=engineer, reviewers=[reviewer], name="zh-recert")
    deploy_first(v1.model, actor=engineer)
    v2 = ModelVersionFactory(model=v1.model, created_by=engineer)
    services.review_submit(actor=engineer, version=v2)
    decide(reviewer, v2, "approve", "checked")
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.status, v2.status) == ("deployed", "approved")
    return v1, v2


# --- a lapsed certification refuses a rollout -------------------------------------------


def test_lapsed_version_cannot_start_a_rollout_over_the_api(two_versions, engineer):
    _, v2 = two_versions
    lapse(v2, days=2)

    response = api_client_for(engineer).post("/api/v1/models/zh-recert/rollouts/", {"candidate": 2}, format="json")

    assert response.status_code == 409
    body = response.json()
    lapsed_since = v2.recertify_by + timedelta(days=1)
    assert body["code"] == "certification_lapsed" and body["lapsed_since"] == lapsed_since.isoformat()
    assert f"lapsed on {lapsed_since:%Y-%m-%d}" in body["detail"] and "2 day(s) ago" in body["detail"]
    assert "/api/v1/models/zh-recert/versions/2/recertify/" in body["detail"]
    assert not Rollout.objects.filter(candidate=v2).exists()
    refusal = AuditEvent.objects.filter(action="rollout.start", outcome="denied").get()
    assert "certification lapsed" in refusal.detail["reason"] and refusal.detail["candidate"] == 2


def test_lapsed_version_is_refused_by_the_rollout_form(two_versions, engineer):
    _, v2 = two_versions
    lapse(v2, days=5)

    response = page_client_for(engineer).post(
        "/models/zh-recert/rollouts/", {"candidate": v2.pk, "steps_preset": "default"}
    )

    assert response.status_code == 409
    assert "certification lapsed on" in response.content.decode()
    assert not Rollout.objects.filter(candidate=v2).exists()


def test_a_version_due_today_still_rolls_out(two_versions, engineer):
    _, v2 = two_versions
    lapse(v2, days=0)

    response = api_client_for(engineer).post("/api/v1/models/zh-recert/rollouts/", {"candidate": 2}, format="json")

    assert response.status_code == 201, response.json()


# --- the round, end to end ----------------------------------------------------------------


def test_recertification_round_keeps_the_version_serving_and_approval_sets_the_next_date(
    engineer, engineer2, reviewer, reviewer2, manager
):
    version = approved(uploader=engineer, reviewers=[reviewer, reviewer2], risk_tier="medium", name="zh-medium")
    deploy_first(version.model, actor=engineer)
    lapse(version, days=3)
    assert [a.metric for a in certification_check()] == ["certification_lapsed"]
    assert "zh-medium v1" in page_client_for(manager).get("/dashboard/").content.decode()

    response = recertify(engineer2, version)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "deployed" and body["review"]["kind"] == "recertification"
    assert body["review"]["required_approvals"] == 2 and body["review"]["fresh_evidence_since"] is None
    # The opener may not decide their own round (separation of duties as for any review).
    refused = api_client_for(engineer2).post(version_path(version, "decisions/"), {"decision": "approve"})
    assert refused.status_code == 403
    assert decide(reviewer, version, "approve", "still fit").status_code == 201
    version.refresh_from_db()
    assert version.status == "deployed" and version.recertify_by < timezone.now().date()
    assert ServingState.objects.get(model=version.model).stable_version_id == version.pk

    second = decide(reviewer2, version, "approve", "still fit")

    assert second.status_code == 201 and second.json()["version_status"] == "deployed"
    version.refresh_from_db()
    assert version.recertify_by == (timezone.now() + timedelta(days=180)).date()
    assert ReviewRequest.objects.filter(version=version, kind="recertification").get().status == "approved"
    # The lapse alert clears with the approval itself, in the same transaction.
    alert = Alert.objects.get(version=version, metric="certification_lapsed")
    assert alert.cleared_at is not None
    assert actions(version_number=1, model_name="zh-medium")[-8:] == [
        ("version.recertify_request", "ok"),
        ("review.open", "ok"),
        ("review.approve", "denied"),
        ("review.approve", "ok"),
        ("review.approve", "ok"),
        ("review.close", "ok"),
        ("version.recertify", "ok"),
        ("monitor.alert_cleared", "ok"),
    ]
    renewed = AuditEvent.objects.get(action="version.recertify")
    assert renewed.changes["after"]["recertify_by"] == version.recertify_by.isoformat()
    assert renewed.detail["approved_by"] == ["rita", "ravi"]
    dossier = page_client_for(manager).get("/models/zh-medium/versions/1/dossier.json").json()
    assert [r["kind"] for r in dossier["reviews"]] == ["recertification", "initial"]
    assert dossier["version"]["certification"]["holds"] is True
    dossier_page = page_client_for(manager).get("/models/zh-medium/versions/1/dossier/").content.decode()
    assert "Re-certification round #" in dossier_page and "version.recertify" in dossier_page


def test_rejected_round_of_a_deployed_version_raises_a_critical_alert_and_it_keeps_serving(
    engineer, reviewer, reviewer2, manager
):
    version = approved(uploader=engineer, reviewers=[reviewer], name="zh-refused")
    deploy_first(version.model, actor=engineer)
    assert recertify(engineer, version).status_code == 201

    response = decide(reviewer2, version, "reject", "live accuracy fell below the approved figure")

    assert response.status_code == 201 and response.json()["version_status"] == "deployed"
    version.refresh_from_db()
    assert version.status == "deployed"
    assert ServingState.objects.get(model=version.model).stable_version_id == version.pk
    alert = Alert.objects.get(version=version, cleared_at__isnull=True)
    assert (alert.metric, alert.severity) == ("certification_refused", "critical")
    assert "roll back" in alert.message and "replacement" in alert.message
    event = AuditEvent.objects.get(action="version.recertify_reject")
    assert event.detail["still_serving"] is True and event.detail["comment"].startswith("live accuracy")
    # The beat task finds it again and raises nothing twice.
    assert certification_check() == []
    page = page_client_for(manager).get("/dashboard/").content.decode()
    assert "critical" in page and "certification_refused" in page and "roll back or roll out a replacement" in page
    version_page = page_client_for(engineer).get(version.get_absolute_url()).content.decode()
    assert "Certification withdrawn" in version_page and "Open a re-certification round" not in version_page
    # A rejected version is not re-certified again.
    again = recertify(engineer, version)
    assert again.status_code == 409 and "rejected" in again.json()["detail"]


def test_rejected_round_leaves_an_approved_version_unable_to_roll_out(two_versions, engineer, reviewer2):
    _, v2 = two_versions
    assert recertify(engineer, v2).status_code == 201
    decide(reviewer2, v2, "reject", "the card no longer matches the data")

    response = api_client_for(engineer).post("/api/v1/models/zh-recert/rollouts/", {"candidate": 2}, format="json")

    assert response.status_code == 409 and response.json()["code"] == "certification_refused"
    v2.refresh_from_db()
    assert v2.status == "approved" and not Rollout.objects.filter(candidate=v2).exists()
    assert not Alert.objects.filter(version=v2).exists()  # nothing serves it: nothing to alert on


def test_fresh_evidence_is_required_where_the_tier_asks(engineer, reviewer, reviewer2, settings):
    version = submitted_version(uploader=engineer, risk_tier="high", name="zh-high")
    for method in ("shap", "pfi"):
        make_report(version=version, requested_by=engineer, method=method)
    decide(reviewer, version, "approve", "evidence read")
    decide(reviewer2, version, "approve", "evidence read")
    assert recertify(engineer, version).status_code == 201
    round_ = ReviewRequest.objects.get(version=version, status="open")
    approval = ReviewRequest.objects.get(version=version, kind="initial")
    assert round_.fresh_evidence_since == approval.closed_at

    stale = decide(reviewer, version, "approve", "nothing new")

    assert stale.status_code == 409 and stale.json()["missing_evidence"] == ["shap", "pfi"]
    assert "fresh evidence" in stale.json()["detail"]
    make_report(version=version, requested_by=engineer, method="shap")
    make_report(version=version, requested_by=engineer, method="pfi")
    assert decide(reviewer, version, "approve", "fresh reports read").status_code == 201
    assert decide(reviewer2, version, "approve", "fresh reports read").status_code == 201
    version.refresh_from_db()
    assert version.status == "approved" and version.recertify_by == (timezone.now() + timedelta(days=90)).date()


# --- bad input ----------------------------------------------------------------------------


def test_recertify_refusals_change_nothing(engineer, reviewer, outsider):
    registered = submitted_version(uploader=engineer, name="zh-waiting")
    version = approved(uploader=engineer, reviewers=[reviewer], name="zh-ok")
    rounds = ReviewRequest.objects.count()

    not_approved = recertify(engineer, registered)
    by_reviewer = recertify(reviewer, version)
    by_outsider = recertify(outsider, version)

    assert not_approved.status_code == 409 and "only an approved or deployed version" in not_approved.json()["detail"]
    assert by_reviewer.status_code == 403 and by_outsider.status_code == 403
    assert ReviewRequest.objects.count() == rounds
    assert recertify(engineer, version).status_code == 201
    already = recertify(engineer, version)
    assert already.status_code == 409 and "already open" in already.json()["detail"]
    assert ReviewRequest.objects.count() == rounds + 1
    version.refresh_from_db()
    assert version.status == "approved"
    denied = AuditEvent.objects.filter(action="version.recertify_request", outcome="denied")
    assert denied.count() == 4


def test_engineer_opens_a_round_from_the_version_page_with_csrf(engineer, reviewer):
    version = approved(uploader=engineer, reviewers=[reviewer], name="zh-page")
    lapse(version, days=1)
    client = page_client_for(engineer, enforce_csrf=True)
    page = client.get(version.get_absolute_url())
    html = page.content.decode()
    assert "Certification lapsed" in html and "Open a re-certification round" in html
    without_token = page_client_for(engineer, enforce_csrf=True).post("/models/zh-page/versions/1/recertify/")
    assert without_token.status_code == 403 and not ReviewRequest.objects.filter(kind="recertification").exists()

    response = client.post("/models/zh-page/versions/1/recertify/", {"csrfmiddlewaretoken": page.context["csrf_token"]})

    assert response.status_code == 302
    after = client.get(version.get_absolute_url()).content.decode()
    assert "Opened re-certification round" in after and "Re-certification round #" in after
    assert "Open a re-certification round" not in after
    reviewer_page = page_client_for(reviewer).get(version.get_absolute_url()).content.decode()
    assert "Open a re-certification round" not in reviewer_page


# --- the beat task ------------------------------------------------------------------------


@pytest.mark.worker
def test_beat_finds_a_lapsed_deployed_version_and_alerts_once(committed_db, engineer, reviewer, worker_pool):
    version = approved(uploader=engineer, reviewers=[reviewer], name="zh-beat")
    deploy_first(version.model, actor=engineer)
    lapse(version, days=7)
    from django.conf import settings

    assert settings.CELERY_BEAT_SCHEDULE["rollouts-check-certifications"]["task"] == check_certifications.name

    worker_pool.start("beat", beat=True, env={"GLASSBOX_CERTIFICATION_CHECK_SECONDS": "1"})

    alert = wait_for(
        lambda: Alert.objects.filter(version=version, metric="certification_lapsed").first(),
        timeout=60,
        what="the lapsed-certification alert",
    )
    assert alert.severity == "warning" and alert.value == 7.0 and "open a re-certification round" in alert.message
    ticks = lambda: worker_pool.log("beat").count("rollouts.tasks.check_certifications[")  # noqa: E731
    seen = ticks()
    wait_for(lambda: ticks() >= seen + 4, timeout=60, what="more ticks")
    assert Alert.objects.filter(version=version, metric="certification_lapsed").count() == 1
    assert AuditEvent.objects.filter(action="monitor.alert_raised", actor_id=None).count() == 1
