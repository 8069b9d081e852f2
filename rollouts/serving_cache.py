"""What the predict path keeps in memory per process so that a steady
stream of calls costs no query for who may call: each user's team roles,
for a second. (The routing table and the model by name are cached the same
way in rollouts/routing.py.)"""

from __future__ import annotations

import time

from governance.access import ROLE_RANK, ModelAccess, Role, is_admin, model_access, team_roles_of

# The predict path asks who may call on every call; the answer is kept a
# second per user in this process (a removed member or revoked role stops
# serving within it), which spares the queries per request.
PERMISSION_TTL_SECONDS = 1.0
_roles: dict[int, tuple[float, dict[int, str], bool]] = {}


def _cached(actor) -> tuple[dict[int, str], bool]:
    """({team id: role}, is admin) of `actor`, as this process saw it at most a second ago."""
    now = time.monotonic()
    hit = _roles.get(actor.pk)
    if hit is None or now - hit[0] >= PERMISSION_TTL_SECONDS:
        hit = (now, team_roles_of(actor), is_admin(actor))
        _roles[actor.pk] = hit
    return hit[1], hit[2]


def may_serve_somewhere(actor) -> bool:
    """Whether `actor` may call the serving API for any model at all: an
    engineer or maintainer of some team, or an admin."""
    if actor is None or not actor.is_authenticated or not actor.is_active:
        return False
    roles, admin = _cached(actor)
    return admin or any(ROLE_RANK.get(role, 0) >= ROLE_RANK[Role.ENGINEER] for role in roles.values())


def serving_access(actor, model) -> ModelAccess:
    """governance.access.model_access, with the caller's team roles from this
    process's one-second cache."""
    if actor is None or not actor.is_authenticated or not actor.is_active:
        return model_access(None, model)
    roles, _ = _cached(actor)
    return model_access(actor, model, team_role=roles.get(model.team_id))


def clear_permission_cache() -> None:
    _roles.clear()
