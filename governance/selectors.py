"""Reads for reviews, compliance dossiers and the manager dashboard. Each
public selector checks that the user may read what it returns."""

from datetime import date, datetime
from typing import Any

from django.db.models import Count, Prefetch, QuerySet
from django.utils import timezone

from glassbox.errors import NotPermitted
from governance.access import has_standing, model_read_filter
from governance.models import AuditEvent, Decision, ReviewRequest
from registry.models import ModelVersion

# What review pages and the version JSON read of each review, in two queries.
REVIEW_PREFETCH = ("opened_by", Prefetch("decisions", queryset=Decision.objects.select_related("reviewer")))
DOSSIER_EVENT_LIMIT = 1000


def _require(user, permission: str, message: str) -> None:
    if not (user.is_authenticated and user.has_perm(permission)):
        raise NotPermitted(message)


def _require_review_read(user) -> None:
    # Which versions: the caller reached them through registry.selectors,
    # which answers a model they may not read with 404 (governance/access.py).
    if not has_standing(user):
        raise NotPermitted("You have no role that may read reviews.")


def review_latest(version: ModelVersion) -> ReviewRequest | None:
    """The version's most recent review (from prefetched reviews when the
    registry selectors fetched them), or None before it was submitted."""
    review = next(iter(version.reviews.all()), None)
    if review is not None:
        review.version = version
    return review


def review_history(*, user, version: ModelVersion) -> list[ReviewRequest]:
    _require_review_read(user)
    reviews = list(version.reviews.prefetch_related(*REVIEW_PREFETCH))
    for review in reviews:
        review.version = version
    return reviews


def decision_list(*, user, version: ModelVersion) -> QuerySet[Decision]:
    if not has_standing(user):
        raise NotPermitted("You have no role that may read review decisions.")
    decisions = Decision.objects.filter(review__version=version).select_related("reviewer", "review")
    return decisions.order_by("created_at", "id")


def review_queue(*, user) -> QuerySet[ReviewRequest]:
    """Open reviews of the models `user` may read, oldest first: the reviewers' work list."""
    _require_review_read(user)
    return _open_reviews().filter(model_read_filter(user, prefix="version__model__"))


def _open_reviews() -> QuerySet[ReviewRequest]:
    return (
        ReviewRequest.objects.filter(status=ReviewRequest.Status.OPEN)
        .select_related("version__model", "version__created_by", "opened_by")
        .prefetch_related(*REVIEW_PREFETCH)
        .order_by("opened_at", "id")
    )


def _review_json(review: ReviewRequest) -> dict[str, Any]:
    return {
        "id": review.pk,
        "status": review.status,
        "opened_by": review.opened_by.get_username(),
        "opened_at": review.opened_at.isoformat(),
        "closed_at": review.closed_at.isoformat() if review.closed_at else None,
        "required_approvals": review.required_approvals,
        "required_evidence": review.required_evidence,
        "missing_evidence": review.missing_evidence() if review.status == ReviewRequest.Status.OPEN else [],
        "decisions": [
            {
                "reviewer": decision.reviewer.get_username(),
                "decision": decision.decision,
                "comment": decision.comment,
                "created_at": decision.created_at.isoformat(),
            }
            for decision in review.decisions.all()
        ],
    }


def version_dossier(*, user, version: ModelVersion, now: datetime | None = None) -> dict[str, Any]:
    """Everything a compliance file holds about one version, as plain JSON
    data; the dossier page renders this same dict, so page and download agree."""
    from explanations.selectors import dossier_reports

    _require_review_read(user)
    model = version.model
    dossier: dict[str, Any] = {
        "generated_at": (now or timezone.now()).isoformat(),
        "generated_by": user.get_username(),
        "model": {
            "name": model.name,
            "task": model.task,
            "risk_tier": model.risk_tier,
            "description": model.description,
        },
        "version": {
            "number": version.number,
            "status": version.status,
            "flavor": version.flavor,
            "uploaded_by": version.created_by.get_username(),
            "uploaded_at": version.created_at.isoformat(),
            "recertify_by": version.recertify_by.isoformat() if version.recertify_by else None,
            "labels": version.labels,
            "max_length": version.max_length,
        },
        "card": version.card,
        "metrics": version.metrics,
        "artifact": {
            "sha256": version.artifact_sha256,
            "size": version.artifact_size,
            "filename": version.artifact_filename,
            "format": version.artifact_format,
            "files": version.files,
        },
        "reviews": [_review_json(review) for review in review_history(user=user, version=version)],
        "explanation_reports": dossier_reports(user=user, version=version),
        "rollouts": version_rollouts(user=user, version=version),
    }
    events = version_audit_events(user=user, version=version)
    if events is not None:
        dossier["audit_events"] = [
            {
                "id": event.pk,
                "created_at": event.created_at.isoformat(),
                "actor": event.actor_username,
                "action": event.action,
                "outcome": event.outcome,
                "reason": event.detail.get("reason", ""),
                "hash": event.hash,
            }
            for event in events
        ]
    return dossier


def version_rollouts(*, user, version: ModelVersion) -> list[dict[str, Any]]:
    """Rollouts where the version was the candidate or the stable one: how far
    each went, how its analyses judged it, and when (the dossier's section)."""
    from rollouts.selectors import analysis_verdict_counts, rollout_history

    if not version.model.can_be_viewed_by(user):
        return []
    rollouts = list(rollout_history(version))
    verdicts = analysis_verdict_counts(rollouts)
    return [
        {
            "id": rollout.pk,
            "role": "candidate" if rollout.candidate_id == version.pk else "stable",
            "candidate": rollout.candidate.number,
            "stable": rollout.stable.number if rollout.stable else None,
            "status": rollout.status,
            "status_reason": rollout.status_reason,
            # The furthest step that took traffic, of how many, and its weight.
            "steps_reached": min(rollout.current_step + 1, len(rollout.steps)),
            "steps_total": len(rollout.steps),
            "final_weight": rollout.step.get("weight") if rollout.steps else None,
            "analysis_verdicts": dict(sorted(verdicts.get(rollout.pk, {}).items())),
            "started_by": rollout.created_by.get_username(),
            "started_at": rollout.created_at.isoformat(),
            "finished_at": rollout.finished_at.isoformat() if rollout.finished_at else None,
        }
        for rollout in rollouts
    ]


def version_audit_events(*, user, version: ModelVersion) -> list[AuditEvent] | None:
    """The version's own audit trail, oldest first; None for users who may
    not read the audit trail (the dossier then leaves that section out)."""
    if not user.has_perm("governance.view_auditevent"):
        return None
    events = AuditEvent.objects.filter(model_name=version.model.name, version_number=version.number).order_by("id")
    return list(events[:DOSSIER_EVENT_LIMIT])


def dashboard(*, user, today: date | None = None, recent_events: int = 20) -> dict[str, Any]:
    """The manager's overview: versions by state, open reviews with their
    age, overdue re-certifications and the latest audit events."""
    _require(user, "governance.view_auditevent", "Only managers may open the dashboard.")
    today = today or timezone.now().date()
    counts = dict(ModelVersion.objects.order_by().values_list("status").annotate(n=Count("id")))
    overdue = (
        ModelVersion.objects.filter(
            status__in=[ModelVersion.Status.APPROVED, ModelVersion.Status.DEPLOYED], recertify_by__lt=today
        )
        .select_related("model")
        .order_by("recertify_by", "model__name", "number")
    )
    return {
        "today": today,
        "versions_by_state": [(state.value, state.label, counts.get(state.value, 0)) for state in ModelVersion.Status],
        "open_reviews": _open_reviews(),
        "overdue": overdue,
        "recent_events": AuditEvent.objects.order_by("-id")[:recent_events],
        **_serving_marks(),
    }


def _serving_marks() -> dict[str, Any]:
    """What needs a manager's eye on the serving side: open monitoring alerts
    and rollouts still under way."""
    from rollouts.selectors import alerts_open, rollouts_active

    return {"open_alerts": alerts_open(), "active_rollouts": rollouts_active()}
