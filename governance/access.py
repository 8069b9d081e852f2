"""Who may do what with a model: the one answer every app asks.

A model belongs to one team. A member's role in that team says what they may
do with its models (viewer < engineer < maintainer, each including the ones
before). Reviewers and managers keep their global roles: a reviewer reads
every model, since any team's version may come to them for review (and
requests reports on it and decides on it); a manager reads every model; an
admin does everything.

`model_access(user, model)` answers for one model; `model_read_filter(user)`
is the same read rule as a queryset filter for lists. Views, serializers and
templates never hold these rules: they ask these two, through
`RegisteredModel.access_of()` / `can_be_viewed_by()` or the selectors.
"""

from dataclasses import dataclass

from django.db.models import Q

from governance.models import TeamMembership

Role = TeamMembership.Role
# Team roles in rising order.
ROLE_RANK = {Role.VIEWER: 1, Role.ENGINEER: 2, Role.MAINTAINER: 3}

MANAGE_TEAMS = "governance.manage_teams"
VIEW_ALL_MODELS = "governance.view_all_models"
DECIDE = "governance.add_decision"
# Any global role reads the registry's shared parts (datasets, the lists).
REGISTRY_READ = "registry.view_registeredmodel"


@dataclass(frozen=True)
class ModelAccess:
    """The caller's effective access to one model."""

    team_role: str | None = None
    # Sees the model, its versions, reports, reviews, rollouts and monitoring.
    read: bool = False
    # Uploads versions, submits them, requests reports, predicts, sends feedback.
    develop: bool = False
    # Starts rollouts and moves them (promote, pause, resume, abort, rollback).
    release: bool = False
    # Adds and removes the owning team's members.
    manage_team: bool = False
    # Records review decisions (a reviewer; the review itself checks independence).
    review: bool = False
    # Every model, whichever team: an admin.
    admin: bool = False

    @property
    def request_reports(self) -> bool:
        # Reviewers ask for the evidence they need; engineers for their own models.
        return self.develop or self.review


NO_ACCESS = ModelAccess()


def is_admin(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm(MANAGE_TEAMS))


def team_role_of(user, team_id: int | None) -> str | None:
    if not user.is_authenticated or team_id is None:
        return None
    return TeamMembership.objects.filter(user=user, team_id=team_id).values_list("role", flat=True).first()


def has_standing(user) -> bool:
    """Whether `user` may use the registry at all: a global role or a team.
    Without it every model route refuses (403) before looking anything up,
    so the refusal reveals nothing about what exists."""
    if not (user.is_authenticated and user.is_active):
        return False
    return user.has_perm(REGISTRY_READ) or TeamMembership.objects.filter(user=user).exists()


_UNKNOWN = object()


def model_access(user, model, *, team_role=_UNKNOWN) -> ModelAccess:
    """What `user` may do with `model` (a RegisteredModel). `team_role`: the
    caller's role in the owning team when already known (a cache), else
    looked up."""
    if user is None or not (user.is_authenticated and user.is_active):
        return NO_ACCESS
    role = team_role_of(user, model.team_id) if team_role is _UNKNOWN else team_role
    if is_admin(user):
        return ModelAccess(
            team_role=role,
            read=True,
            develop=True,
            release=True,
            manage_team=True,
            review=user.has_perm(DECIDE),
            admin=True,
        )
    rank = ROLE_RANK.get(role, 0)
    reviewer = user.has_perm(DECIDE)
    read = rank >= 1 or reviewer or user.has_perm(VIEW_ALL_MODELS)
    return ModelAccess(
        team_role=role,
        read=read,
        develop=rank >= 2,
        release=rank >= 3,
        manage_team=rank >= 3,
        review=reviewer and read,
    )


def model_read_filter(user, prefix: str = "") -> Q:
    """The read rule of model_access as a filter on RegisteredModel (or, with
    `prefix` such as "model__" or "version__model__", on rows of a model)."""
    if user is None or not (user.is_authenticated and user.is_active):
        return Q(pk__in=[])
    # Managers, reviewers and admins (superusers hold every permission).
    if user.has_perm(VIEW_ALL_MODELS) or user.has_perm(DECIDE):
        return Q()
    return Q(**{f"{prefix}team_id__in": TeamMembership.objects.filter(user=user).values("team_id")})


def team_roles_of(user) -> dict[int, str]:
    """{team id: role} of every team `user` belongs to."""
    if not user.is_authenticated:
        return {}
    return dict(TeamMembership.objects.filter(user=user).values_list("team_id", "role"))
