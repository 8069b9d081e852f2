"""Reads of rollouts and serving state, for the API, the pages and the workers."""

from datetime import datetime, timedelta

from django.db.models import Count, Q, QuerySet

from glassbox.errors import NotFound, NotPermitted
from registry.models import ModelVersion, RegisteredModel
from rollouts.models import Alert, AnalysisRun, Rollout, ServingState

_RELATED = ("model", "candidate", "stable", "created_by")


def _require_read(user, model: RegisteredModel | None = None) -> None:
    if not (user.is_authenticated and user.has_perm("rollouts.view_rollout")):
        raise NotPermitted("You have no role that may read rollouts.")
    if model is not None and not model.can_be_viewed_by(user):
        raise NotPermitted("You may not read this model's rollouts.")


def rollout_list(*, user, model: RegisteredModel) -> QuerySet[Rollout]:
    _require_read(user, model)
    return Rollout.objects.filter(model=model).select_related(*_RELATED).order_by("-created_at", "-id")


def rollout_get(*, user, pk: int) -> Rollout:
    _require_read(user)
    rollout = Rollout.objects.select_related(*_RELATED).filter(pk=pk).first()
    if rollout is None:
        raise NotFound(f"No rollout {pk}.")
    if not rollout.model.can_be_viewed_by(user):
        raise NotPermitted("You may not read this rollout.")
    return rollout


def analysis_runs(*, user, rollout: Rollout, limit: int | None = None) -> QuerySet[AnalysisRun]:
    """A rollout's analysis runs, newest first."""
    if not (user.is_authenticated and user.has_perm("rollouts.view_analysisrun")):
        raise NotPermitted("You have no role that may read analysis runs.")
    runs = AnalysisRun.objects.filter(rollout=rollout).order_by("-window_end", "-id")
    return runs[:limit] if limit else runs


def active_rollout(model: RegisteredModel) -> Rollout | None:
    return Rollout.objects.select_related(*_RELATED).filter(model=model, status__in=Rollout.ACTIVE_STATUSES).first()


def rollout_history(version: ModelVersion) -> QuerySet[Rollout]:
    """Rollouts where the version was the candidate or the stable one."""
    return (
        Rollout.objects.filter(Q(candidate=version) | Q(stable=version))
        .select_related(*_RELATED)
        .order_by("-created_at", "-id")
    )


def analysis_verdict_counts(rollouts: list[Rollout]) -> dict[int, dict[str, int]]:
    """How many analysis runs judged each rollout which way: {rollout id: {verdict: count}}."""
    counts: dict[int, dict[str, int]] = {}
    runs = AnalysisRun.objects.filter(rollout__in=rollouts).order_by().values_list("rollout_id", "verdict")
    for rollout_id, verdict, count in runs.annotate(n=Count("id")):
        counts.setdefault(rollout_id, {})[verdict] = count
    return counts


def rollouts_active() -> QuerySet[Rollout]:
    """Rollouts still under way, across all models (the manager's dashboard)."""
    return Rollout.objects.filter(status__in=Rollout.ACTIVE_STATUSES).select_related("model", "candidate", "stable")


def alerts_open() -> QuerySet[Alert]:
    """Monitoring alerts not cleared yet, across all models (the manager's dashboard)."""
    return Alert.objects.filter(cleared_at__isnull=True).select_related("model", "version")


def serving_state(model: RegisteredModel) -> ServingState | None:
    return ServingState.objects.select_related("stable_version", "previous_version").filter(model=model).first()


def analysis_window_start(rollout: Rollout) -> datetime:
    """Where the next analysis window of a rollout begins: its last analysis,
    or the start (or restart, after a resume) of its current step."""
    return max(moment for moment in (rollout.last_analysis_at, rollout.step_started_at, rollout.created_at) if moment)


def rollout_is_due(rollout: Rollout, *, now: datetime) -> bool:
    if rollout.status != Rollout.Status.PROGRESSING:
        return False
    return now - analysis_window_start(rollout) >= timedelta(seconds=rollout.analysis_interval_seconds)


def rollouts_due_for_analysis(*, now: datetime) -> list[int]:
    """Progressing rollouts whose last analysis (or step start) is at least one interval old."""
    fields = ("pk", "status", "last_analysis_at", "step_started_at", "created_at", "analysis_interval_seconds")
    progressing = Rollout.objects.filter(status=Rollout.Status.PROGRESSING).only(*fields)
    return [rollout.pk for rollout in progressing if rollout_is_due(rollout, now=now)]
