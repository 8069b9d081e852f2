"""Writes of the review workflow: submitting a version for review and
recording reviewers' decisions. Each runs in one transaction that records
its AuditEvents; a refused attempt is rolled back and then recorded as a
denied event in a transaction of its own (hence the public function wraps a
private atomic one: a refusal recorded inside the rolled-back transaction
would vanish with it)."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from glassbox.errors import Conflict, GlassboxError, InvalidInput, NotPermitted
from governance.audit import record_event, record_refusal
from governance.audit_actions import AuditAction
from governance.evidence import evidence_snapshot
from governance.models import Decision, ReportOpen, ReviewRequest
from governance.policy import approval_policy
from governance.selectors import certification_state, recertification_refusal
from registry import selectors as registry_selectors
from registry.models import ModelVersion
from registry.services import version_move, version_recertify

COMMENT_MAX_LENGTH = 10_000


def review_target_get(*, actor, name: str, number: int, action: AuditAction) -> ModelVersion:
    """The version a review write names. Someone who may not even read the
    registry is refused here, and that refusal is on the trail like any other
    denied review attempt."""
    try:
        return registry_selectors.version_get(user=actor, name=name, number=number)
    except NotPermitted as exc:
        record_refusal(
            actor=actor,
            action=action,
            reason=exc.message,
            object_type="registry.modelversion",
            object_label=f"{name} v{number}"[:300],
            model_name=name[:100],
            version_number=number,
        )
        raise


def _lock_for_review(version: ModelVersion) -> tuple[ModelVersion, ReviewRequest | None]:
    """Lock the version row, then its open review, always in this order:
    concurrent submitters and deciders queue on the version row, so each sees
    the decisions of those before it, and no two can deadlock."""
    locked = (
        ModelVersion.objects.select_for_update(of=("self",)).select_related("model", "created_by").get(pk=version.pk)
    )
    review = (
        ReviewRequest.objects.select_for_update(of=("self",))
        .filter(version=locked, status=ReviewRequest.Status.OPEN)
        .first()
    )
    if review is not None:
        review.version = locked
    return locked, review


def review_submit(*, actor, version: ModelVersion) -> ReviewRequest:
    """Open a review of `version` (registered -> in_review) with the bar its
    risk tier's policy sets now."""
    try:
        return _review_open(actor=actor, version=version)
    except GlassboxError as exc:
        record_refusal(
            actor=actor,
            action=AuditAction.REVIEW_SUBMIT,
            reason=exc.message,
            obj=version,
            detail={"status_code": exc.status_code},
        )
        raise


@transaction.atomic
def _review_open(*, actor, version: ModelVersion) -> ReviewRequest:
    if not version.model.can_receive_version_from(actor):
        raise NotPermitted("Only engineers may submit versions for review.")
    locked, _ = _lock_for_review(version)
    archived = locked.model.archived_refusal("take reviews")
    if archived is not None:
        raise archived
    refusal = locked.submission_refusal(actor)
    if refusal is not None:
        raise refusal
    policy = approval_policy(locked.model.risk_tier)
    review = ReviewRequest.objects.create(
        version=locked,
        opened_by=actor,
        required_approvals=policy.approvals,
        required_evidence=list(policy.evidence),
        require_opened_evidence=policy.require_opened_evidence,
        require_independent_approver=policy.require_independent_approver,
    )
    version_move(
        actor=actor,
        version=locked,
        to_status=ModelVersion.Status.IN_REVIEW,
        action=AuditAction.VERSION_SUBMIT,
        detail={"review_id": review.pk},
    )
    record_event(
        actor=actor,
        action=AuditAction.REVIEW_OPEN,
        obj=review,
        changes={
            "after": {
                "status": review.status,
                "required_approvals": review.required_approvals,
                "required_evidence": review.required_evidence,
                "require_opened_evidence": review.require_opened_evidence,
                "require_independent_approver": review.require_independent_approver,
            }
        },
        detail={"risk_tier": policy.risk_tier},
    )
    version.status = locked.status
    return review


def review_recertify(*, actor, version: ModelVersion) -> ReviewRequest:
    """Open a re-certification round of an approved or deployed version: a
    review with its tier's bar (and fresh evidence where the tier asks for
    it) that leaves the version's status alone, so it keeps serving while
    reviewers look again."""
    try:
        return _recertify_open(actor=actor, version=version)
    except GlassboxError as exc:
        record_refusal(
            actor=actor,
            action=AuditAction.VERSION_RECERTIFY_REQUEST,
            reason=exc.message,
            obj=version,
            detail={"status_code": exc.status_code},
        )
        raise


def review_recertify_for_risk_raise(*, actor, version: ModelVersion, from_tier: str) -> ReviewRequest | None:
    """Open a re-certification round because an admin raised the model's
    risk tier: the version was approved under a lower bar, so reviewers look
    again under the new one while it keeps its status (and keeps serving).
    The tier change itself was the admin's authorised act; a version with a
    round already open, or whose re-certification was refused, gets none (None)."""
    state = certification_state(version)
    if state.open_round is not None or state.refused_round is not None:
        return None
    return _recertify_open(actor=actor, version=version, risk_raised_from=from_tier)


@transaction.atomic
def _recertify_open(*, actor, version: ModelVersion, risk_raised_from: str | None = None) -> ReviewRequest:
    # The same per-model question as a first submission (governance/access.py).
    if risk_raised_from is None and not version.model.can_receive_version_from(actor):
        raise NotPermitted("Only engineers of the model's team may open a re-certification round.")
    locked, _ = _lock_for_review(version)
    if risk_raised_from is None:
        refusal = recertification_refusal(user=actor, version=locked)
        if refusal is not None:
            raise refusal
    policy = approval_policy(locked.model.risk_tier)
    opened_at = timezone.now()
    fresh_since = None
    if policy.recertify_fresh_evidence:
        # Fresh: finished after the approval this round renews (the round's own
        # opening when no approval is on record, e.g. rows from before reviews).
        last_approval = (
            ReviewRequest.objects.filter(version=locked, status=ReviewRequest.Status.APPROVED)
            .order_by("-closed_at")
            .values_list("closed_at", flat=True)
            .first()
        )
        fresh_since = last_approval or opened_at
    review = ReviewRequest.objects.create(
        version=locked,
        kind=ReviewRequest.Kind.RECERTIFICATION,
        opened_by=actor,
        opened_at=opened_at,
        required_approvals=policy.approvals,
        required_evidence=list(policy.evidence),
        fresh_evidence_since=fresh_since,
        require_opened_evidence=policy.require_opened_evidence,
    )
    lapsed_since = locked.certification_lapsed_since(opened_at.date())
    record_event(
        actor=actor,
        action=AuditAction.VERSION_RECERTIFY_REQUEST,
        obj=locked,
        detail={
            "review_id": review.pk,
            "status": locked.status,
            "recertify_by": locked.recertify_by,
            "lapsed_since": lapsed_since,
            **({"risk_raised_from": risk_raised_from} if risk_raised_from else {}),
        },
    )
    record_event(
        actor=actor,
        action=AuditAction.REVIEW_OPEN,
        obj=review,
        changes={
            "after": {
                "status": review.status,
                "kind": review.kind,
                "required_approvals": review.required_approvals,
                "required_evidence": review.required_evidence,
                "fresh_evidence_since": fresh_since,
                "require_opened_evidence": review.require_opened_evidence,
            }
        },
        detail={"risk_tier": policy.risk_tier},
    )
    return review


def decision_record(*, actor, version: ModelVersion, decision: str, comment: str = "") -> Decision:
    """Record one reviewer's approve or reject. The approval that completes
    the quorum approves the version (and sets its re-certification date);
    one reject closes the review as rejected, for good."""
    try:
        return _decide(actor=actor, version=version, decision=decision, comment=comment)
    except GlassboxError as exc:
        attempted = decision if decision in Decision.Verdict.values else "decide"
        record_refusal(
            actor=actor,
            action=AuditAction(f"review.{attempted}"),
            reason=exc.message,
            obj=version,
            detail={"status_code": exc.status_code, "decision": str(decision)[:20], "comment": (comment or "")[:2000]},
        )
        raise


@transaction.atomic
def _decide(*, actor, version: ModelVersion, decision: str, comment: str) -> Decision:
    if decision not in Decision.Verdict.values:
        raise InvalidInput(f"decision must be 'approve' or 'reject', not {str(decision)[:20]!r}.")
    comment = (comment or "").strip()
    if decision == Decision.Verdict.REJECT and not comment:
        raise InvalidInput("A reject needs a comment that says why.")
    if len(comment) > COMMENT_MAX_LENGTH:
        raise InvalidInput(f"A comment is at most {COMMENT_MAX_LENGTH} characters.")
    # Who may decide at all does not depend on the version's state.
    if not (actor.is_authenticated and actor.has_perm("governance.add_decision")):
        raise NotPermitted("Only reviewers may decide on versions.")

    locked, review = _lock_for_review(version)
    if review is None or locked.status not in ReviewRequest.DECIDABLE_VERSION_STATUSES[review.kind]:
        raise Conflict(
            f"{locked} is {locked.status}; only a version in review can be decided on.", current_status=locked.status
        )
    # Taken under the review's lock, and the refusal reads this same snapshot:
    # what is recorded is exactly what the decision was allowed on.
    evidence = evidence_snapshot(review=review, reviewer=actor)
    refusal = review.decision_refusal(actor, decision, evidence=evidence)
    if refusal is not None:
        raise refusal

    made = Decision.objects.create(review=review, reviewer=actor, decision=decision, comment=comment, evidence=evidence)
    made.review = review
    record_event(
        actor=actor,
        action=AuditAction(f"review.{decision}"),
        obj=made,
        changes={"after": {"decision": decision}},
        detail={"review_id": review.pk, "comment": comment, "evidence": evidence},
    )
    if review.is_recertification:
        _recertification_decided(actor=actor, review=review, version=locked, decision=decision, comment=comment)
    elif decision == Decision.Verdict.REJECT:
        _review_close(actor=actor, review=review, status=ReviewRequest.Status.REJECTED)
        version_move(
            actor=actor,
            version=locked,
            to_status=ModelVersion.Status.REJECTED,
            action=AuditAction.VERSION_REJECT,
            detail={"review_id": review.pk, "comment": comment},
        )
    else:
        approvals = review.decisions.filter(decision=Decision.Verdict.APPROVE).select_related("reviewer")
        approvers = [approval.reviewer.get_username() for approval in approvals]
        if len(approvers) >= review.required_approvals:
            closed_at = _review_close(actor=actor, review=review, status=ReviewRequest.Status.APPROVED)
            policy = approval_policy(locked.model.risk_tier)
            version_move(
                actor=actor,
                version=locked,
                to_status=ModelVersion.Status.APPROVED,
                action=AuditAction.VERSION_APPROVE,
                detail={"review_id": review.pk, "approved_by": approvers},
                fields={"recertify_by": policy.recertify_by(closed_at)},
            )
    version.status = locked.status
    version.recertify_by = locked.recertify_by
    return made


def _quorum(review: ReviewRequest) -> list[str] | None:
    """The approvers' names once the approvals reach the review's quorum, else None."""
    approvals = review.decisions.filter(decision=Decision.Verdict.APPROVE).select_related("reviewer")
    approvers = [approval.reviewer.get_username() for approval in approvals]
    return approvers if len(approvers) >= review.required_approvals else None


def _recertification_decided(
    *, actor, review: ReviewRequest, version: ModelVersion, decision: str, comment: str
) -> None:
    """Close a re-certification round when a decision settles it. The version
    keeps its status either way: approval renews the date; a reject withdraws
    the certification (no new rollout) and, for a deployed version, raises a
    critical alert; the platform never stops serving it on its own."""
    from rollouts.services import certification_alerts_sync  # the alert lives with the serving side

    if decision == Decision.Verdict.REJECT:
        _review_close(actor=actor, review=review, status=ReviewRequest.Status.REJECTED)
        record_event(
            actor=actor,
            action=AuditAction.VERSION_RECERTIFY_REJECT,
            obj=version,
            detail={
                "review_id": review.pk,
                "comment": comment,
                "status": version.status,
                "still_serving": version.status == ModelVersion.Status.DEPLOYED,
            },
        )
    else:
        approvers = _quorum(review)
        if approvers is None:
            return
        closed_at = _review_close(actor=actor, review=review, status=ReviewRequest.Status.APPROVED)
        version_recertify(
            actor=actor,
            version=version,
            recertify_by=approval_policy(version.model.risk_tier).recertify_by(closed_at),
            detail={"review_id": review.pk, "approved_by": approvers},
        )
    certification_alerts_sync(version_id=version.pk)


def _review_close(*, actor, review: ReviewRequest, status: str) -> datetime:
    if not review.can_move_to(status):
        raise Conflict(f"{review} is {review.status}; it cannot become {status}.")
    before = review.status
    review.status = status
    review.closed_at = timezone.now()
    review.save(update_fields=["status", "closed_at"])
    record_event(
        actor=actor,
        action=AuditAction.REVIEW_CLOSE,
        obj=review,
        changes={"before": {"status": before}, "after": {"status": status, "closed_at": review.closed_at}},
    )
    return review.closed_at


def report_open_record(*, actor, report, via: str) -> bool:
    """Note that `actor`, who may decide on the version's open review, opened
    one of its succeeded reports (page, export or API). Deliberately not a
    chain event per view: a compact access-log row, the first open of each
    report only; what it proves is bound into the reviewer's decision, whose
    evidence lists the reports they had opened. Returns whether it counted."""
    if report.status != "succeeded" or not (actor.is_authenticated and actor.has_perm("governance.add_decision")):
        return False
    review = (
        ReviewRequest.objects.filter(version_id=report.version_id, status=ReviewRequest.Status.OPEN)
        .values("pk", "opened_by_id", "version__created_by_id")
        .first()
    )
    # Only someone who may decide on this review is its reviewer.
    if review is None or actor.pk in (review["opened_by_id"], review["version__created_by_id"]):
        return False
    ReportOpen.objects.bulk_create(
        [ReportOpen(review_id=review["pk"], reviewer=actor, report_id=report.pk, via=via)], ignore_conflicts=True
    )
    return True
