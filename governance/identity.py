"""Who people are: local passwords, and the company's identity provider over
OpenID Connect (mozilla-django-oidc does the protocol; this module decides
which account a provider's person signs in to and which roles they hold).

- An account is linked to the provider's (issuer, subject) pair
  (OidcIdentity), created on first sign-in. A local account that happens to
  carry the same username is never taken over: that sign-in is refused.
- At every sign-in the person's roles become exactly those their provider
  groups map to (GLASSBOX_OIDC_GROUP_ROLES); changes are audited.
- A deactivated account is refused at sign-in, and its open sessions end at
  their next request (get_user answers None for it).
- With GLASSBOX_LOCAL_SIGNIN off, passwords sign nobody in (pages, admin,
  token exchange): the provider is the only way in.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404
from django.utils import timezone
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from governance import roles
from governance.audit import record_event, record_refusal
from governance.audit_actions import AuditAction
from governance.models import OidcIdentity

logger = logging.getLogger(__name__)

TEAM_ROLES = ("maintainer", "engineer", "viewer")


class LocalPasswordBackend(ModelBackend):
    """Django's password check, switched off with GLASSBOX_LOCAL_SIGNIN.
    Permissions are answered here for every account, however it signed in."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not settings.GLASSBOX_LOCAL_SIGNIN:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class OidcRefused(SuspiciousOperation):
    """A provider sign-in that must not open a session (the reason is audited)."""


def roles_for_groups(groups) -> set[str]:
    """The Glassbox roles a provider's groups map to."""
    mapping = settings.GLASSBOX_OIDC_GROUP_ROLES or {}
    found = set()
    for group in groups or []:
        role = mapping.get(str(group))
        if role in roles.ROLES:
            found.add(role)
        elif role is not None:
            logger.warning("GLASSBOX_OIDC_GROUP_ROLES maps %r to %r, which is no Glassbox role", group, role)
    return found


def team_memberships_for_groups(groups) -> list[dict]:
    """The team memberships a provider's groups map to
    (GLASSBOX_OIDC_GROUP_TEAMS, {"group": {"team": ..., "role": ...}});
    applied at every sign-in by `account_sync_teams`."""
    mapping = settings.GLASSBOX_OIDC_GROUP_TEAMS or {}
    memberships = []
    for group in groups or []:
        entry = mapping.get(str(group))
        if isinstance(entry, dict) and entry.get("team") and entry.get("role") in TEAM_ROLES:
            memberships.append({"team": str(entry["team"]), "role": entry["role"]})
    return memberships


def _user_label(user) -> dict:
    return {"object_type": "auth.user", "object_id": user.pk, "object_label": user.get_username()}


def account_sync_roles(*, actor, user, wanted: set[str]) -> None:
    """Make `user`'s Glassbox roles exactly `wanted` (other groups stay)."""
    current = roles.roles_of(user)
    added, removed = sorted(wanted - current), sorted(current - wanted)
    if not added and not removed:
        return
    with transaction.atomic():
        user.groups.remove(*Group.objects.filter(name__in=removed))
        for name in added:
            user.groups.add(Group.objects.get_or_create(name=name)[0])
        record_event(
            actor=actor,
            action=AuditAction.OIDC_ROLES_SYNC,
            changes={"roles": [sorted(current), sorted(wanted)]},
            detail={"added": added, "removed": removed, "source": "identity provider groups"},
            **_user_label(user),
        )


def account_sync_teams(*, user, wanted: list[dict]) -> None:
    """Make `user`'s memberships of the provider-managed teams (every team
    GLASSBOX_OIDC_GROUP_TEAMS names) follow their groups: added, role changed
    or removed, each audited. Teams the mapping never names are managed in
    Glassbox and left alone. Where two groups map to one team, the higher
    role wins. A mapped team that does not exist is logged and skipped (an
    admin creates teams; a sign-in never does)."""
    from governance.access import ROLE_RANK
    from governance.models import Team, TeamMembership

    managed = {
        str(entry["team"])
        for entry in (settings.GLASSBOX_OIDC_GROUP_TEAMS or {}).values()
        if isinstance(entry, dict) and entry.get("team")
    }
    if not managed:
        return
    roles_by_team: dict[str, str] = {}
    for entry in wanted:
        current = roles_by_team.get(entry["team"])
        if current is None or ROLE_RANK[entry["role"]] > ROLE_RANK[current]:
            roles_by_team[entry["team"]] = entry["role"]
    teams = {team.name: team for team in Team.objects.filter(name__in=managed)}
    for name in sorted(set(roles_by_team) - set(teams)):
        logger.warning("GLASSBOX_OIDC_GROUP_TEAMS names team %r, which does not exist: create it first", name)
    source = {"source": "identity provider groups", "username": user.get_username()}
    with transaction.atomic():
        held = {
            m.team.name: m
            for m in TeamMembership.objects.filter(user=user, team__name__in=managed).select_related("team")
        }
        for name, team in sorted(teams.items()):
            role, membership = roles_by_team.get(name), held.get(name)
            if membership is None and role is not None:
                TeamMembership.objects.create(team=team, user=user, role=role)
                action, changes = (
                    AuditAction.TEAM_MEMBER_ADD,
                    {"after": {"username": user.get_username(), "role": role}},
                )
            elif membership is not None and role is None:
                membership.delete()
                action, changes = AuditAction.TEAM_MEMBER_REMOVE, {"before": {"role": membership.role}}
            elif membership is not None and membership.role != role:
                before, membership.role = membership.role, role
                membership.save(update_fields=["role"])
                action, changes = AuditAction.TEAM_MEMBER_ROLE, {"before": {"role": before}, "after": {"role": role}}
            else:
                continue
            record_event(
                actor=user,
                action=action,
                changes=changes,
                detail=source,
                object_type="governance.team",
                object_id=team.pk,
                object_label=team.name,
            )


def _refuse(reason: str, *, username: str = "", user=None) -> OidcRefused:
    record_refusal(
        actor=None,
        action=AuditAction.OIDC_LOGIN,
        reason=reason,
        object_type="auth.user",
        object_id=user.pk if user is not None else "",
        object_label=username[:150],
        detail={"username": username[:150]},
    )
    return OidcRefused(reason)


class GlassboxOIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, with accounts linked by (issuer,
    subject), the ID token's issuer and audience checked, and roles from the
    provider's groups."""

    def authenticate(self, request, **kwargs):
        if not settings.GLASSBOX_OIDC_ENABLED:
            return None
        return super().authenticate(request, **kwargs)

    def get_payload_data(self, token, key):
        payload = super().get_payload_data(token, key)
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if payload.get("iss") != settings.GLASSBOX_OIDC_ISSUER or self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("The ID token was not issued by the configured provider for this client.")
        return payload

    def verify_claims(self, claims):
        return bool(claims.get("sub")) and bool(claims.get(settings.GLASSBOX_OIDC_USERNAME_CLAIM))

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        if claims.get("sub") != payload.get("sub"):
            # OpenID Connect Core 5.3.2: userinfo about someone else is not to be used.
            raise SuspiciousOperation("The userinfo subject differs from the ID token's.")
        if not self.verify_claims(claims):
            raise SuspiciousOperation("The provider sent no subject or username.")
        username = str(claims[settings.GLASSBOX_OIDC_USERNAME_CLAIM])[:150]
        groups = claims.get(settings.GLASSBOX_OIDC_GROUPS_CLAIM) or []
        identity = (
            OidcIdentity.objects.select_related("user")
            .filter(issuer=settings.GLASSBOX_OIDC_ISSUER, subject=str(claims["sub"]))
            .first()
        )
        if identity is None:
            if get_user_model().objects.filter(username__iexact=username).exists():
                raise _refuse("a local account already has this username", username=username)
            user = self._create(username=username, claims=claims)
        else:
            user = identity.user
            if not user.is_active:
                raise _refuse("account deactivated", username=user.get_username(), user=user)
        account_sync_roles(actor=user, user=user, wanted=roles_for_groups(groups))
        account_sync_teams(user=user, wanted=team_memberships_for_groups(groups))
        OidcIdentity.objects.filter(user=user).update(last_login_at=timezone.now())
        return user

    def _create(self, *, username: str, claims: dict):
        with transaction.atomic():
            user = get_user_model().objects.create_user(
                username,
                email=str(claims.get("email") or "")[:254],
                first_name=str(claims.get("given_name") or "")[:150],
                last_name=str(claims.get("family_name") or "")[:150],
            )  # no password: this account signs in through the provider only
            OidcIdentity.objects.create(user=user, issuer=settings.GLASSBOX_OIDC_ISSUER, subject=str(claims["sub"]))
            record_event(
                actor=user,
                action=AuditAction.OIDC_ACCOUNT_CREATE,
                detail={"issuer": settings.GLASSBOX_OIDC_ISSUER},
                **_user_label(user),
            )
        return user

    def get_user(self, user_id):
        user = super().get_user(user_id)
        # A deactivated account's open sessions end at their next request.
        return user if user is not None and user.is_active else None

    # Permissions come from LocalPasswordBackend (a ModelBackend too): asking
    # twice would double the permission queries of every check.
    def get_user_permissions(self, user_obj, obj=None):
        return set()

    def get_group_permissions(self, user_obj, obj=None):
        return set()

    def get_all_permissions(self, user_obj, obj=None):
        return set()

    def has_perm(self, user_obj, perm, obj=None):
        return False

    def has_module_perms(self, user_obj, app_label):
        return False


class OidcStartView(OIDCAuthenticationRequestView):
    """GET /oidc/authenticate/: off to the provider (404 while it is not configured)."""

    def get(self, request):
        if not settings.GLASSBOX_OIDC_ENABLED:
            raise Http404("No identity provider is configured.")
        # Read at request time (the parent reads them when built), so settings changes apply.
        self.OIDC_OP_AUTH_ENDPOINT = settings.OIDC_OP_AUTHORIZATION_ENDPOINT
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


class OidcCallbackView(OIDCAuthenticationCallbackView):
    """GET /oidc/callback/: the provider sends the browser back here."""

    def get(self, request):
        if not settings.GLASSBOX_OIDC_ENABLED:
            raise Http404("No identity provider is configured.")
        return super().get(request)
