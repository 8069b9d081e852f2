"""What the predict path keeps in memory per process so that a steady
stream of calls costs no query for who may call: each user's permissions,
for a second. (The routing table and the model by name are cached the same
way in rollouts/routing.py.)"""

from __future__ import annotations

import time

# The predict path asks for permissions on every call; the answer is kept a
# second per user in this process (a revoked role stops serving within it),
# which spares two queries per request.
PERMISSION_TTL_SECONDS = 1.0
_permissions: dict[int, tuple[float, frozenset[str] | None]] = {}


def has_serving_perm(actor, perm: str) -> bool:
    """Whether `actor` holds `perm`, as this process saw it at most a second ago."""
    if actor is None or not actor.is_authenticated or not actor.is_active:
        return False
    now = time.monotonic()
    hit = _permissions.get(actor.pk)
    if hit is None or now - hit[0] >= PERMISSION_TTL_SECONDS:
        # None stands for "everything" (an active superuser).
        hit = (now, None if actor.is_superuser else frozenset(actor.get_all_permissions()))
        _permissions[actor.pk] = hit
    return hit[1] is None or perm in hit[1]


def clear_permission_cache() -> None:
    _permissions.clear()
