"""The public event vocabulary and the one hook that feeds it: committed,
successful audit events of a mapped action, and nothing else."""

import pytest
from django.db import transaction

from governance.audit import record_event, record_refusal
from governance.audit_actions import AuditAction
from notifications import events

PUBLISHED = [
    "version.registered",
    "review.opened",
    "review.decided",
    "version.approved",
    "version.rejected",
    "rollout.started",
    "rollout.step",
    "rollout.paused",
    "rollout.aborted",
    "rollout.promoted",
    "rollout.rolled_back",
    "alert.raised",
    "alert.cleared",
]


def test_the_vocabulary_is_the_published_one():
    assert list(events.EVENT_TYPES) == PUBLISHED


def test_every_mapped_action_is_an_audit_action_but_the_pending_rollback():
    strays = [a for a in events.EVENT_FOR_ACTION if a not in AuditAction._value2member_map_]
    assert strays in ([], [events.ROLLBACK_ACTION])


@pytest.mark.django_db
def test_a_mapped_event_is_dispatched_after_commit_only(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as mapped:
        record_event(actor=None, action=AuditAction.ROLLOUT_PAUSE, object_label="r")
    with django_capture_on_commit_callbacks() as unmapped:
        record_event(actor=None, action=AuditAction.ROLLOUT_ANALYSIS, object_label="r")
    with django_capture_on_commit_callbacks() as refused:
        record_refusal(actor=None, action=AuditAction.ROLLOUT_PAUSE, reason="no")

    assert len(mapped) == 1 and unmapped == [] and refused == []


@pytest.mark.django_db
def test_a_rolled_back_change_dispatches_nothing(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        with transaction.atomic():
            record_event(actor=None, action=AuditAction.ROLLOUT_ABORT, object_label="r")
            transaction.set_rollback(True)

    assert callbacks == []
