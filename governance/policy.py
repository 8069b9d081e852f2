"""The approval policy: what a version of each risk tier needs before it is
approved, read from settings.GLASSBOX_APPROVAL_POLICY so that changing the
bar is a settings change, not a code change."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class ApprovalPolicy:
    risk_tier: str
    approvals: int
    evidence: tuple[str, ...]
    recertify_days: int
    # A re-certification round needs reports finished after the approval it renews.
    recertify_fresh_evidence: bool = False
    # The approver must have opened the required reports (page or export).
    require_opened_evidence: bool = False
    # At least one approver must belong to no team at all.
    require_independent_approver: bool = False

    def recertify_by(self, approved_at: datetime) -> date:
        return (approved_at + timedelta(days=self.recertify_days)).date()


def approval_policy(risk_tier: str) -> ApprovalPolicy:
    try:
        entry = settings.GLASSBOX_APPROVAL_POLICY[risk_tier]
        policy = ApprovalPolicy(
            risk_tier=risk_tier,
            approvals=int(entry["approvals"]),
            evidence=tuple(str(method) for method in entry.get("evidence", ())),
            recertify_days=int(entry["recertify_days"]),
            recertify_fresh_evidence=bool(entry.get("recertify_fresh_evidence", False)),
            require_opened_evidence=bool(entry.get("require_opened_evidence", False)),
            require_independent_approver=bool(entry.get("require_independent_approver", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"GLASSBOX_APPROVAL_POLICY has no valid entry for risk tier {risk_tier!r}.") from exc
    # A policy of zero approvals would let a version approve itself.
    if policy.approvals < 1 or policy.recertify_days < 1:
        raise ImproperlyConfigured(f"GLASSBOX_APPROVAL_POLICY[{risk_tier!r}] needs approvals and recertify_days >= 1.")
    return policy
