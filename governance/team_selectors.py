"""Reads of teams: who sees which team (its members, admins and managers)."""

from django.db.models import Count, QuerySet

from glassbox.errors import NotFound, NotPermitted
from governance.access import VIEW_ALL_MODELS, has_standing
from governance.models import Team, TeamMembership


def _require_standing(user) -> None:
    if not has_standing(user):
        raise NotPermitted("You have no role and belong to no team.")


def team_list(*, user) -> QuerySet[Team]:
    _require_standing(user)
    teams = Team.objects.annotate(model_count=Count("models", distinct=True)).order_by("name")
    if user.has_perm(VIEW_ALL_MODELS):
        return teams
    return teams.filter(pk__in=TeamMembership.objects.filter(user=user).values("team_id"))


def team_get(*, user, name: str) -> Team:
    """A team its caller may see; any other is answered as if it did not exist."""
    team = team_list(user=user).filter(name=name).first()
    if team is None:
        raise NotFound(f"No team named {name!r}.")
    return team


def team_members(team: Team) -> QuerySet[TeamMembership]:
    return team.memberships.select_related("user").order_by("user__username")


def teams_of(user) -> list[Team]:
    """The teams `user` belongs to, by name."""
    if not user.is_authenticated:
        return []
    return list(Team.objects.filter(memberships__user=user).order_by("name"))
