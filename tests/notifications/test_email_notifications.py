"""Every notification kind, sent through a real SMTP server (aiosmtpd on
loopback): who gets it, who does not, opt-outs, at most once, retries."""

from datetime import timedelta

import pytest
from django.utils import timezone

from governance import services as review_services
from governance.audit import record_event
from governance.audit_actions import AuditAction
from governance.models import AuditEvent
from notifications import events
from notifications.models import Notification, NotificationKind, NotificationPreference
from notifications.services import audit_event_dispatch, notification_send, recertifications_notify
from registry.models import ModelVersion
from rollouts import services as rollout_services
from rollouts.models import Alert
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, approve
from tests.notifications.mailing import send_for


def _recipients(smtp_server) -> list[str]:
    return sorted(m["To"] for m in smtp_server.messages)


@pytest.fixture
def model(engineer):
    return RegisteredModelFactory(name="zh-mail", created_by=engineer)


@pytest.fixture
def rollout(model, engineer, engineer2, reviewer):
    """A canary of v2 (started by erin) over a deployed v1."""
    stable, candidate = (ModelVersionFactory(model=model, created_by=engineer) for _ in range(2))
    for version in (stable, candidate):
        approve(version, submitter=engineer2, reviewer=reviewer)
    rollout_services.rollout_start(actor=engineer, model=model, candidate=stable)
    return rollout_services.rollout_start(actor=engineer, model=model, candidate=candidate)


def test_reviewers_are_told_when_a_review_opens(smtp_server, model, engineer, engineer2, reviewer, reviewer2, manager):
    version = ModelVersionFactory(model=model, created_by=engineer)
    review_services.review_submit(actor=engineer2, version=version)

    send_for(AuditAction.REVIEW_OPEN)

    # Both reviewers; not the uploader or submitter (engineers), not the manager.
    assert _recipients(smtp_server) == ["ravi@example.test", "rita@example.test"]
    message = smtp_server.inbox.to("rita@example.test")[0]
    assert message["Subject"] == "[Glassbox] Review requested: zh-mail v1"
    assert "/models/zh-mail/versions/1/review/" in message.get_content()
    assert "eli submitted zh-mail v1" in message.get_content()


def test_the_submitter_is_told_of_each_decision(smtp_server, model, engineer, engineer2, reviewer, reviewer2):
    model.risk_tier = "medium"  # two approvals: each decision is its own e-mail
    model.save()
    version = ModelVersionFactory(model=model, created_by=engineer)
    review_services.review_submit(actor=engineer2, version=version)
    review_services.decision_record(actor=reviewer, version=version, decision="approve", comment="fine by me")
    send_for(AuditAction.REVIEW_APPROVE)
    review_services.decision_record(actor=reviewer2, version=version, decision="approve", comment="agreed")
    send_for(AuditAction.REVIEW_APPROVE)
    rejected = ModelVersionFactory(model=model, created_by=engineer)
    review_services.review_submit(actor=engineer2, version=rejected)
    review_services.decision_record(actor=reviewer, version=rejected, decision="reject", comment="accuracy too low")
    send_for(AuditAction.REVIEW_REJECT)

    subjects = [m["Subject"] for m in smtp_server.inbox.to("eli@example.test")]
    assert subjects == [
        "[Glassbox] zh-mail v1: rita approved it",
        "[Glassbox] zh-mail v1: ravi approved it",
        "[Glassbox] zh-mail v2: rita rejected it",
    ]
    assert "accuracy too low" in smtp_server.inbox.to("eli@example.test")[2].get_content()
    assert _recipients(smtp_server) == ["eli@example.test"] * 3


def test_the_starter_and_managers_are_told_when_a_rollout_pauses(smtp_server, rollout, engineer2, manager):
    rollout_services.rollout_pause(actor=engineer2, rollout=rollout, reason="checking the dashboards")

    send_for(AuditAction.ROLLOUT_PAUSE)

    # erin started it, max manages; eli paused it himself and is not told.
    assert _recipients(smtp_server) == ["erin@example.test", "max@example.test"]
    message = smtp_server.inbox.to("erin@example.test")[0]
    assert message["Subject"] == f"[Glassbox] rollout #{rollout.pk} of zh-mail v2 paused"
    assert "checking the dashboards" in message.get_content()
    assert f"/rollouts/{rollout.pk}/" in message.get_content()


def test_the_starter_and_managers_are_told_when_the_platform_aborts_a_rollout(smtp_server, rollout, manager):
    rollout_services.rollout_abort(actor=None, rollout=rollout, reason="error rate 0.3 over 0.01")

    send_for(AuditAction.ROLLOUT_ABORT)

    assert _recipients(smtp_server) == ["erin@example.test", "max@example.test"]
    body = smtp_server.inbox.to("max@example.test")[0].get_content()
    assert "aborted by the platform" in body and "error rate 0.3 over 0.01" in body


@pytest.mark.parametrize("names", ["the rollout", "the version"])
def test_the_starter_and_managers_are_told_of_a_rollback(smtp_server, rollout, engineer2, manager, names):
    # Rollback itself is built beside this; its audit event is what feeds the
    # e-mail, whether it names the rollout or the rolled-back version.
    subject = rollout if names == "the rollout" else rollout.candidate
    record_event(actor=engineer2, action=events.ROLLBACK_ACTION, obj=subject, detail={"reason": "bad answers"})

    send_for(events.ROLLBACK_ACTION)

    assert _recipients(smtp_server) == ["erin@example.test", "max@example.test"]
    assert "rolled back" in smtp_server.messages[0]["Subject"]


def test_managers_are_told_when_an_alert_is_raised(smtp_server, rollout, manager, engineer):
    version = rollout.stable
    alert = Alert.objects.create(
        model=version.model,
        version=version,
        metric="error_rate",
        value=0.2,
        threshold=0.05,
        message="error rate 0.2 over 0.05 in the last 300 s",
        raised_at=timezone.now(),
    )
    # As rollouts.services.monitor_check records it.
    record_event(actor=None, action=AuditAction.MONITOR_ALERT_RAISED, obj=alert, detail={"metric": "error_rate"})

    send_for(AuditAction.MONITOR_ALERT_RAISED)

    assert _recipients(smtp_server) == ["max@example.test"]
    assert smtp_server.messages[0]["Subject"] == "[Glassbox] Alert on zh-mail v1: error_rate"


def test_owners_are_told_14_days_before_recertification_once(smtp_server, model, engineer, engineer2, reviewer):
    today = timezone.now().date()
    due = ModelVersionFactory(model=model, created_by=engineer2)
    later = ModelVersionFactory(model=model, created_by=engineer2)
    approve(due, submitter=engineer, reviewer=reviewer)
    approve(later, submitter=engineer, reviewer=reviewer)
    ModelVersion.objects.filter(pk=due.pk).update(recertify_by=today + timedelta(days=14))
    ModelVersion.objects.filter(pk=later.pk).update(recertify_by=today + timedelta(days=15))

    for notification_id in recertifications_notify(today=today):
        notification_send(notification_id=notification_id)
    # The uploader (eli) and the model's owner (erin); only the version due within 14 days.
    assert _recipients(smtp_server) == ["eli@example.test", "erin@example.test"]
    assert all("zh-mail v1 is due for re-certification" in m["Subject"] for m in smtp_server.messages)

    # The next day's run: v2 is now 14 days away; v1 is not told again.
    again = Notification.objects.filter(pk__in=recertifications_notify(today=today + timedelta(days=1)))
    assert sorted(note.subject.split(" is due")[0] for note in again) == ["[Glassbox] zh-mail v2"] * 2


def test_a_kind_turned_off_is_not_sent(smtp_server, model, engineer, engineer2, reviewer, reviewer2):
    NotificationPreference.objects.create(user=reviewer2, disabled_kinds=[NotificationKind.REVIEW_OPENED])
    version = ModelVersionFactory(model=model, created_by=engineer)
    review_services.review_submit(actor=engineer2, version=version)

    send_for(AuditAction.REVIEW_OPEN)

    assert _recipients(smtp_server) == ["rita@example.test"]
    assert not Notification.objects.filter(user=reviewer2).exists()


def test_a_dispatch_that_runs_twice_sends_nothing_twice(smtp_server, model, engineer, engineer2, reviewer):
    version = ModelVersionFactory(model=model, created_by=engineer)
    review_services.review_submit(actor=engineer2, version=version)
    send_for(AuditAction.REVIEW_OPEN)

    assert send_for(AuditAction.REVIEW_OPEN) == []
    assert _recipients(smtp_server) == ["rita@example.test"]


def test_a_refusing_smtp_server_is_retried_with_backoff_then_given_up(
    smtp_server, settings, model, engineer, engineer2, reviewer
):
    settings.GLASSBOX_NOTIFICATION_MAX_ATTEMPTS = 3
    settings.GLASSBOX_NOTIFICATION_BACKOFF_SECONDS = 2
    version = ModelVersionFactory(model=model, created_by=engineer)
    review_services.review_submit(actor=engineer2, version=version)
    event_id = AuditEvent.objects.filter(action=AuditAction.REVIEW_OPEN).latest("id").pk
    (note_id,), _ = audit_event_dispatch(event_id=event_id)
    smtp_server.inbox.refuse = 10

    waits = [notification_send(notification_id=note_id) for _ in range(3)]

    note = Notification.objects.get(pk=note_id)
    assert waits == [2, 4, None]
    assert note.status == Notification.Status.FAILED and note.attempts == 3
    assert "451" in note.error
    assert smtp_server.messages == []


def test_a_temporary_refusal_then_success_sends_once(smtp_server, model, engineer, engineer2, reviewer):
    version = ModelVersionFactory(model=model, created_by=engineer)
    review_services.review_submit(actor=engineer2, version=version)
    smtp_server.inbox.refuse = 1

    (note_id,) = send_for(AuditAction.REVIEW_OPEN)
    assert notification_send(notification_id=note_id) is None

    note = Notification.objects.get(pk=note_id)
    assert note.status == Notification.Status.SENT and note.attempts == 2 and note.sent_at is not None
    assert _recipients(smtp_server) == ["rita@example.test"]
