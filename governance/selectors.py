"""Reads for reviews, compliance dossiers and the manager dashboard. Each
public selector checks that the user may read what it returns."""

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db.models import Count, Prefetch, QuerySet
from django.utils import timezone

from glassbox.errors import Conflict, GlassboxError, InvalidInput, NotPermitted
from governance.access import has_standing, model_read_filter
from governance.audit import event_timestamp
from governance.audit_actions import AuditAction
from governance.evidence import current_report_entries, decision_evidence_view
from governance.models import ApiToken, AuditEvent, Decision, ReviewRequest
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


@dataclass(frozen=True)
class Certification:
    """Where a version's certification stands (rollout start, version page,
    dossier, the certification beat task)."""

    recertify_by: date | None
    # The first day past `recertify_by`, or None while it holds.
    lapsed_since: date | None
    # The open round (of either kind), and the rejected re-certification round, if any.
    open_round: ReviewRequest | None
    refused_round: ReviewRequest | None

    @property
    def holds(self) -> bool:
        return self.lapsed_since is None and self.refused_round is None


def certification_state(version: ModelVersion, *, today: date | None = None) -> Certification:
    today = today or timezone.now().date()
    rounds = ReviewRequest.objects.filter(version=version).select_related("opened_by")
    return Certification(
        recertify_by=version.recertify_by,
        lapsed_since=version.certification_lapsed_since(today),
        open_round=rounds.filter(status=ReviewRequest.Status.OPEN).first(),
        refused_round=rounds.filter(
            kind=ReviewRequest.Kind.RECERTIFICATION, status=ReviewRequest.Status.REJECTED
        ).first(),
    )


def recertify_hint(version: ModelVersion) -> str:
    name, number = version.model.name, version.number
    return (
        f"an engineer opens a re-certification round (POST /api/v1/models/{name}/versions/{number}/recertify/, "
        "or 'Open a re-certification round' on the version page) and reviewers approve it"
    )


def certification_refusal(version: ModelVersion, *, today: date | None = None) -> Conflict | None:
    """Why `version` may not start a rollout on its certification's account
    (refused in a re-certification round, or past its date), or None."""
    state = certification_state(version, today=today)
    if state.refused_round is not None:
        refused = state.refused_round
        return Conflict(
            f"{version} may not roll out: its re-certification was rejected in review #{refused.pk} on "
            f"{refused.closed_at:%Y-%m-%d}. A rejected version is not re-certified again: upload a new version "
            "and roll that out instead.",
            code="certification_refused",
            review=refused.pk,
        )
    if state.lapsed_since is not None:
        days = (timezone.now().date() if today is None else today) - state.recertify_by
        if state.open_round is not None:
            how = f"re-certification round #{state.open_round.pk} is open; once reviewers approve it, it can roll out"
        else:
            how = f"to re-certify it, {recertify_hint(version)}"
        return Conflict(
            f"{version} may not roll out: its certification lapsed on {state.lapsed_since:%Y-%m-%d} (re-certification "
            f"was due by {state.recertify_by:%Y-%m-%d}, {days.days} day(s) ago); {how}.",
            code="certification_lapsed",
            recertify_by=state.recertify_by.isoformat(),
            lapsed_since=state.lapsed_since.isoformat(),
        )
    return None


def recertification_refusal(*, user, version: ModelVersion) -> GlassboxError | None:
    """Why `user` may not open a re-certification round of `version` now, or
    None. The service asks it again under the version's lock; the version
    page shows the button only when this is None."""
    if not (user.is_authenticated and user.has_perm("governance.add_reviewrequest")):
        return NotPermitted("Only engineers may open a re-certification round.")
    if version.status not in (ModelVersion.Status.APPROVED, ModelVersion.Status.DEPLOYED):
        return Conflict(
            f"{version} is {version.status}; only an approved or deployed version can be re-certified.",
            current_status=version.status,
        )
    state = certification_state(version)
    if state.open_round is not None:
        return Conflict(
            f"Review #{state.open_round.pk} of {version} is already open; decide it before opening another round.",
            review=state.open_round.pk,
        )
    if state.refused_round is not None:
        return Conflict(
            f"The re-certification of {version} was rejected in review #{state.refused_round.pk}; a rejected "
            "version is not re-certified again: upload a new version instead.",
            review=state.refused_round.pk,
        )
    return None


def versions_with_refused_certification() -> QuerySet[ModelVersion]:
    """Approved or deployed versions whose re-certification was rejected."""
    refused = ReviewRequest.objects.filter(
        kind=ReviewRequest.Kind.RECERTIFICATION, status=ReviewRequest.Status.REJECTED
    ).values("version_id")
    return ModelVersion.objects.filter(
        pk__in=refused, status__in=[ModelVersion.Status.APPROVED, ModelVersion.Status.DEPLOYED]
    )


def review_history(*, user, version: ModelVersion) -> list[ReviewRequest]:
    """The version's reviews, newest first; each decision carries
    `evidence_view` (what it was decided on, and the reports after it)."""
    _require_review_read(user)
    reviews = list(version.reviews.prefetch_related(*REVIEW_PREFETCH))
    current = None
    for review in reviews:
        review.version = version
        for decision in review.decisions.all():
            if current is None:
                current = current_report_entries(version)
            decision.evidence_view = decision_evidence_view(decision, current)
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


def _review_json(review: ReviewRequest, events: dict[tuple[str, int], dict]) -> dict[str, Any]:
    return {
        "id": review.pk,
        "kind": review.kind,
        "status": review.status,
        "opened_by": review.opened_by.get_username(),
        "opened_at": review.opened_at.isoformat(),
        "closed_at": review.closed_at.isoformat() if review.closed_at else None,
        "required_approvals": review.required_approvals,
        "required_evidence": review.required_evidence,
        "fresh_evidence_since": review.fresh_evidence_since.isoformat() if review.fresh_evidence_since else None,
        "missing_evidence": review.missing_evidence() if review.status == ReviewRequest.Status.OPEN else [],
        "require_opened_evidence": review.require_opened_evidence,
        "decisions": [
            {
                "id": decision.pk,
                "reviewer": decision.reviewer.get_username(),
                "decision": decision.decision,
                "comment": decision.comment,
                "created_at": decision.created_at.isoformat(),
                # The snapshot as recorded (also in the decision's event, below).
                "evidence": decision.evidence,
                "after_decision": [entry["id"] for entry in decision.evidence_view["after"]],
                "event": events.get(("decision", decision.pk)),
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
    reviews = review_history(user=user, version=version)
    reports = dossier_reports(user=user, version=version)
    dataset_ids = sorted({report["dataset"] for report in reports if report["dataset"]})
    decision_ids = [decision.pk for review in reviews for decision in review.decisions.all()]
    cited = _cited_events(
        version=version,
        decision_ids=decision_ids,
        report_ids=[report["id"] for report in reports if report["status"] == "succeeded"],
        dataset_ids=dataset_ids,
    )
    for report in reports:
        report["event"] = cited.get(("report", report["id"]))
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
            "certification": _certification_json(version),
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
            "event": cited.get(("version", version.pk)),
        },
        "reviews": [_review_json(review, cited) for review in reviews],
        "explanation_reports": reports,
        "datasets": _dossier_datasets(dataset_ids, cited),
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
                "prev_hash": event.prev_hash,
                "hash": event.hash,
            }
            for event in events
        ]
        dossier["chain"] = _chain_segment([event.pk for event in events] + [ref["id"] for ref in cited.values()])
    return dossier


def _certification_json(version: ModelVersion) -> dict[str, Any]:
    state = certification_state(version)
    return {
        # Only an approved or deployed version holds a certification at all.
        "holds": version.status in (ModelVersion.Status.APPROVED, ModelVersion.Status.DEPLOYED) and state.holds,
        "lapsed_since": state.lapsed_since.isoformat() if state.lapsed_since else None,
        "refused_by_review": state.refused_round.pk if state.refused_round else None,
        "open_round": state.open_round.pk if state.open_round else None,
    }


# Cited events, by what they are about: (kind, object id) -> (action, object_type).
_CITED = {
    "decision": ((AuditAction.REVIEW_APPROVE, AuditAction.REVIEW_REJECT), "governance.decision"),
    "report": ((AuditAction.EXPLANATION_SUCCEED,), "explanations.explanationreport"),
    "dataset": ((AuditAction.DATASET_CREATE,), "registry.dataset"),
    "version": ((AuditAction.VERSION_CREATE,), "registry.modelversion"),
}
# The longest chain segment a dossier carries in full (see _chain_segment).
DOSSIER_CHAIN_LIMIT = 50_000


def _cited_events(*, version, decision_ids, report_ids, dataset_ids) -> dict[tuple[str, int], dict]:
    """The chain position ({"id", "hash"}) of the events that recorded each
    decision, report success, dataset and the version's artifact."""
    wanted = {"decision": decision_ids, "report": report_ids, "dataset": dataset_ids, "version": [version.pk]}
    found: dict[tuple[str, int], dict] = {}
    for kind, ids in wanted.items():
        if not ids:
            continue
        actions, object_type = _CITED[kind]
        rows = (
            AuditEvent.objects.filter(
                action__in=list(actions),
                outcome=AuditEvent.Outcome.OK,
                object_type=object_type,
                object_id__in=[str(pk) for pk in ids],
            )
            .order_by("id")
            .values_list("object_id", "id", "hash")
        )
        for object_id, event_id, event_hash in rows:
            found.setdefault((kind, int(object_id)), {"id": event_id, "hash": event_hash})
    return found


def _dossier_datasets(dataset_ids: list[int], cited: dict) -> list[dict[str, Any]]:
    from registry.models import Dataset

    return [
        {
            "id": pk,
            "name": name,
            "sha256": sha256,
            "size": size,
            "rows": rows,
            "event": cited.get(("dataset", pk)),
        }
        for pk, name, sha256, size, rows in Dataset.objects.filter(pk__in=dataset_ids)
        .order_by("id")
        .values_list("id", "name", "sha256", "size", "row_count")
    ]


def _chain_segment(event_ids: list[int]) -> dict[str, Any]:
    """Every event, in full, from the first cited one to the chain's head now:
    what an auditor needs to recompute each hash and follow the links up to a
    signed checkpoint, with nothing but this file (scripts/verify_dossier.py).
    A hash chain has no shorter proof, hence the whole segment; past
    DOSSIER_CHAIN_LIMIT events only the positions are given."""
    from governance.audit_selectors import EVENT_FIELDS

    head = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    if not event_ids or head is None:
        return {"from_event": None, "to_event": head, "complete": True, "events": []}
    first = min(event_ids)
    segment: dict[str, Any] = {"from_event": first, "to_event": head}
    if head - first + 1 > DOSSIER_CHAIN_LIMIT:
        segment.update(complete=False, events=[], reason=f"more than {DOSSIER_CHAIN_LIMIT:,} events; ask for an export")
        return segment
    rows = list(AuditEvent.objects.filter(id__gte=first, id__lte=head).order_by("id").values(*EVENT_FIELDS))
    for row in rows:
        row["created_at"] = event_timestamp(row["created_at"])
    segment.update(complete=True, events=rows)
    return segment


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
            # A promotion a rollback undid later: when, by whom, why.
            "rolled_back_at": rollout.rolled_back_at.isoformat() if rollout.rolled_back_at else None,
            "rolled_back_by": rollout.rolled_back_by.get_username() if rollout.rolled_back_by else None,
            "rollback_reason": rollout.rollback_reason,
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
        "refused_certifications": versions_with_refused_certification()
        .select_related("model")
        .order_by("model__name", "number"),
        "recent_events": AuditEvent.objects.order_by("-id")[:recent_events],
        **_serving_marks(),
    }


def _serving_marks() -> dict[str, Any]:
    """What needs a manager's eye on the serving side: open monitoring alerts
    and rollouts still under way."""
    from governance.models import IntegrityAlert
    from rollouts.selectors import alerts_open, rollouts_active

    return {
        "open_alerts": alerts_open(),
        "active_rollouts": rollouts_active(),
        "integrity_alerts": IntegrityAlert.objects.filter(cleared_at__isnull=True).order_by("raised_at", "id"),
    }


def api_tokens_of(user):
    """A user's API tokens, newest first (revoked ones included: the list is
    also where one sees what was revoked and when)."""
    return ApiToken.objects.filter(user=user).select_related("user").order_by("-created_at", "-id")


def api_tokens_listed(*, viewer, username: str | None = None):
    """The tokens `viewer` lists: their own, or (admins only) those of
    `username`, so that an admin can find the token to revoke."""
    from governance.access import is_admin

    if username is None or username == viewer.get_username():
        return api_tokens_of(viewer)
    if "\x00" in username:
        raise InvalidInput("user is not a username.")
    if not is_admin(viewer):
        raise NotPermitted("Only admins may list another user's tokens.")
    return ApiToken.objects.filter(user__username=username).select_related("user").order_by("-created_at", "-id")


def api_token_of(user, pk: int):
    """One of `user`'s tokens (an admin may reach anyone's), or None."""
    from governance.access import is_admin

    tokens = ApiToken.objects.select_related("user")
    if not is_admin(user):
        tokens = tokens.filter(user=user)
    return tokens.filter(pk=pk).first()
