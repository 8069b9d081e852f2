"""Writes of teams: creating one, adding, re-roling and removing members,
and moving a model to another team. Each takes `actor=`, runs in one
transaction with its audit event; refusals are recorded in their own."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from glassbox.errors import Conflict, GlassboxError, InvalidInput, NotPermitted
from governance.access import is_admin, team_role_of
from governance.audit import record_event, record_refusal
from governance.audit_actions import AuditAction
from governance.models import Team, TeamMembership

Role = TeamMembership.Role


def _team_label(team: Team) -> dict:
    return {"object_type": "governance.team", "object_id": team.pk, "object_label": team.name}


def team_manage_refusal(actor, team: Team) -> NotPermitted | None:
    """Why `actor` may not change `team`'s members, or None: its maintainers and admins may."""
    if is_admin(actor) or team_role_of(actor, team.pk) == Role.MAINTAINER:
        return None
    return NotPermitted(f"Only maintainers of team {team.name} and admins may manage its members.")


def _refused(*, actor, action: AuditAction, exc: GlassboxError, detail: dict, **label) -> None:
    record_refusal(actor=actor, action=action, reason=exc.message, detail=detail, **label)


def team_create(*, actor, name: str) -> Team:
    try:
        if not is_admin(actor):
            raise NotPermitted("Only admins may create teams.")
        name = str(name)
        try:
            Team._meta.get_field("name").run_validators(name)
        except ValidationError as exc:
            raise InvalidInput(f"Invalid team name: {exc.messages[0]}", field="name") from exc
        try:
            with transaction.atomic():
                team = Team.objects.create(name=name, created_by=actor)
                record_event(
                    actor=actor, action=AuditAction.TEAM_CREATE, changes={"after": {"name": name}}, **_team_label(team)
                )
        except IntegrityError as exc:
            raise Conflict(f"A team named {name!r} already exists.") from exc
        return team
    except GlassboxError as exc:
        _refused(
            actor=actor,
            action=AuditAction.TEAM_CREATE,
            exc=exc,
            detail={"status_code": exc.status_code},
            object_type="governance.team",
            object_label=str(name)[:100],
        )
        raise


def _user_named(username: str):
    user = get_user_model().objects.filter(username=str(username)[:150]).first()
    if user is None or not user.is_active:
        raise InvalidInput(f"No active user named {str(username)[:150]!r}.", field="username")
    return user


def _keeps_a_maintainer(team: Team, leaving: TeamMembership) -> bool:
    """Whether `team` still has a maintainer once `leaving` is no longer one."""
    if leaving.role != Role.MAINTAINER:
        return True
    return team.memberships.filter(role=Role.MAINTAINER).exclude(pk=leaving.pk).exists()


def team_member_set(*, actor, team: Team, username: str, role: str) -> tuple[TeamMembership, bool]:
    """Add `username` to `team` with `role`, or change their role. Returns
    (membership, created). A team that has maintainers keeps at least one."""
    detail = {"username": str(username)[:150], "role": str(role)[:20]}
    try:
        refusal = team_manage_refusal(actor, team)
        if refusal is not None:
            raise refusal
        if role not in Role.values:
            raise InvalidInput(f"role must be one of {', '.join(Role.values)}.", field="role")
        user = _user_named(username)
        with transaction.atomic():
            Team.objects.select_for_update().get(pk=team.pk)  # one membership change per team at a time
            membership = TeamMembership.objects.filter(team=team, user=user).first()
            if membership is None:
                membership = TeamMembership.objects.create(team=team, user=user, role=role)
                record_event(
                    actor=actor,
                    action=AuditAction.TEAM_MEMBER_ADD,
                    changes={"after": {"username": user.username, "role": role}},
                    **_team_label(team),
                )
                return membership, True
            before = membership.role
            if before != role:
                if not _keeps_a_maintainer(team, membership):
                    raise Conflict(
                        f"{user.username} is the last maintainer of team {team.name}; add another maintainer first.",
                        code="last_maintainer",
                    )
                membership.role = role
                membership.save(update_fields=["role"])
                record_event(
                    actor=actor,
                    action=AuditAction.TEAM_MEMBER_ROLE,
                    changes={"before": {"role": before}, "after": {"role": role}},
                    detail={"username": user.username},
                    **_team_label(team),
                )
            return membership, False
    except GlassboxError as exc:
        _refused(actor=actor, action=AuditAction.TEAM_MEMBER_ADD, exc=exc, detail=detail, **_team_label(team))
        raise


def team_member_remove(*, actor, team: Team, username: str) -> None:
    detail = {"username": str(username)[:150]}
    try:
        refusal = team_manage_refusal(actor, team)
        if refusal is not None:
            raise refusal
        with transaction.atomic():
            Team.objects.select_for_update().get(pk=team.pk)
            membership = (
                TeamMembership.objects.select_related("user").filter(team=team, user__username=username).first()
            )
            if membership is None:
                raise InvalidInput(f"{str(username)[:150]!r} is not a member of team {team.name}.", field="username")
            if not _keeps_a_maintainer(team, membership):
                raise Conflict(
                    f"{membership.user.username} is the last maintainer of team {team.name}; "
                    "add another maintainer first.",
                    code="last_maintainer",
                )
            record_event(
                actor=actor,
                action=AuditAction.TEAM_MEMBER_REMOVE,
                changes={"before": {"username": membership.user.username, "role": membership.role}},
                **_team_label(team),
            )
            membership.delete()
    except GlassboxError as exc:
        _refused(actor=actor, action=AuditAction.TEAM_MEMBER_REMOVE, exc=exc, detail=detail, **_team_label(team))
        raise


def model_team_move(*, actor, model, team_name: str):
    """Give `model` (a RegisteredModel) to another team: an admin's act."""
    try:
        if not is_admin(actor):
            raise NotPermitted("Only admins may move a model to another team.")
        team = Team.objects.filter(name=str(team_name)[:100]).first()
        if team is None:
            raise InvalidInput(f"No team named {str(team_name)[:100]!r}.", field="team")
        before = model.team.name
        if team.pk != model.team_id:
            with transaction.atomic():
                model.team = team
                model.save(update_fields=["team"])
                record_event(
                    actor=actor,
                    action=AuditAction.MODEL_TEAM_MOVE,
                    obj=model,
                    changes={"before": {"team": before}, "after": {"team": team.name}},
                )
        return model
    except GlassboxError as exc:
        record_refusal(
            actor=actor,
            action=AuditAction.MODEL_TEAM_MOVE,
            reason=exc.message,
            obj=model,
            detail={"team": str(team_name)[:100], "status_code": exc.status_code},
        )
        raise
