"""Audit action names: one StrEnum (governance/audit_actions.py) that the
trail stores as plain text."""

import re
from pathlib import Path

import pytest

from governance.audit import record_event
from governance.audit_actions import AuditAction
from governance.audit_integrity import verify_chain
from governance.models import AuditEvent

ROOT = Path(__file__).resolve().parents[2]
APPS = ("glassbox", "governance", "registry", "explanations", "rollouts", "notifications")
# action="x.y", and an action picked in a tuple: `action, event = "aborted", "rollout.abort"`.
ACTION_LITERAL = re.compile(r"""\baction=(["'])([a-z_]+\.[a-z_]+)\1|, event = "[a-z]+", "([a-z_]+\.[a-z_]+)\"""")


def test_members_are_distinct_dotted_names():
    values = [member.value for member in AuditAction]
    assert len(values) == len(set(values))
    assert all(re.fullmatch(r"[a-z]+\.[a-z_]+", value) for value in values), values


def test_every_action_written_out_in_the_apps_is_a_member():
    strays = []
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                for match in ACTION_LITERAL.finditer(line):
                    value = match.group(2) or match.group(3)
                    if value not in AuditAction._value2member_map_:
                        strays.append(f"{path.relative_to(ROOT)}:{number}: {value}")
    assert not strays, "actions missing from AuditAction:\n" + "\n".join(strays)


@pytest.mark.django_db
def test_a_member_is_stored_as_its_text_and_the_chain_holds():
    event = record_event(actor=None, action=AuditAction.AUDIT_EXPORT, object_label="trail")

    stored = AuditEvent.objects.values_list("action", flat=True).get(pk=event.pk)

    assert stored == "audit.export" and type(stored) is str
    assert AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORT).get().pk == event.pk
    assert verify_chain() == (1, None)


def test_an_unknown_action_name_is_an_error_not_a_new_kind():
    with pytest.raises(ValueError):
        AuditAction("review.aprove")
