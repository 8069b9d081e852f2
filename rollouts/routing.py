"""Which version answers a prediction: the routing table of a model and the
consistent hash that splits keyed traffic between stable and candidate.

The table is rebuilt from the database at most once a second per process
(ServingState + the active rollout), so the request path costs no query in
the steady state. Rollout services call `invalidate_routing(model_id)` after
a change; other processes (gunicorn workers) follow within ROUTING_TTL_SECONDS.

Routing rule (monotone, sticky): a keyed input goes to the candidate iff
`route_key(rollout_id, key) < weight`. The bucket of a key depends only on
the rollout and the key, so raising the weight only ever adds keys to the
candidate, and a key never flips back and forth between versions.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field

from registry.models import ModelVersion, RegisteredModel

logger = logging.getLogger(__name__)

ROUTING_TTL_SECONDS = 1.0
# 2**64 buckets mapped onto [0, 100): far finer than any weight anyone sets.
_HASH_SPACE = float(2**64)


@dataclass(frozen=True)
class RoutingTable:
    model: RegisteredModel
    stable: ModelVersion | None
    rollout_id: int | None = None
    rollout_status: str | None = None
    candidate: ModelVersion | None = None
    candidate_weight: int = 0
    shadow: bool = False
    # Whether the candidate is loaded and warmed in this process; until it is,
    # its share of traffic stays with the stable version.
    candidate_ready: bool = False
    built_at: float = field(default_factory=time.monotonic)

    def choose(self, key: str | None) -> tuple[ModelVersion, str]:
        """The version for one input and why ("stable" or "candidate")."""
        if self.candidate is None or not self.candidate_ready or self.candidate_weight <= 0:
            return self.stable, "stable"
        if self.candidate_weight >= 100:
            return self.candidate, "candidate"
        bucket = route_key(self.rollout_id, key) if key is not None else random.random() * 100.0
        if bucket < self.candidate_weight:
            return self.candidate, "candidate"
        return self.stable, "stable"


def route_key(rollout_id: int, key: str) -> float:
    """The bucket of a key within a rollout, in [0, 100). Salted with the
    rollout so each rollout draws a fresh sample of keys for its canary."""
    digest = hashlib.blake2b(f"{rollout_id}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE * 100.0


_tables: dict[int, RoutingTable] = {}
_models_by_name: dict[str, tuple[float, RegisteredModel]] = {}
_lock = threading.Lock()
_warming: set[int] = set()
_warmed: set[str] = set()


def invalidate_routing(model_id: int) -> None:
    """Forget this process's table of a model (after a rollout changed it)."""
    with _lock:
        _tables.pop(model_id, None)


def forget_model(model_id: int, name: str) -> None:
    """Forget this process's copy of a model and its table (after the model
    row itself changed, e.g. its input redaction); others follow within a TTL."""
    with _lock:
        _tables.pop(model_id, None)
        _models_by_name.pop(name, None)


def clear_routing_cache() -> None:
    with _lock:
        _tables.clear()
        _models_by_name.clear()


def cached_model(name: str) -> RegisteredModel | None:
    """A registered model by name, cached like the routing table (names never
    change), so the predict path resolves the URL without a query."""
    now = time.monotonic()
    hit = _models_by_name.get(name)
    if hit is not None and now - hit[0] < ROUTING_TTL_SECONDS:
        return hit[1]
    model = RegisteredModel.objects.filter(name=name).first()
    if model is not None:
        with _lock:
            _models_by_name[name] = (now, model)
    return model


def routing_table(model: RegisteredModel) -> RoutingTable:
    table = _tables.get(model.pk)
    if table is not None and time.monotonic() - table.built_at < ROUTING_TTL_SECONDS:
        return table
    table = _build_table(model)
    with _lock:
        _tables[model.pk] = table
    return table


def _build_table(model: RegisteredModel) -> RoutingTable:
    from rollouts.models import Rollout, ServingState

    state = ServingState.objects.select_related("stable_version__model").filter(model_id=model.pk).first()
    stable = state.stable_version if state is not None else None
    rollout = (
        Rollout.objects.select_related("candidate__model")
        .filter(model_id=model.pk, status__in=Rollout.ACTIVE_STATUSES)
        .first()
    )
    if stable is not None:
        # The stable version answers most traffic: load it now (the first
        # request of a fresh process pays for it once; `warm_versions` at
        # start-up avoids even that).
        _warm(stable)
    if rollout is None:
        return RoutingTable(model=model, stable=stable)
    candidate = rollout.candidate
    return RoutingTable(
        model=model,
        stable=stable,
        rollout_id=rollout.pk,
        rollout_status=rollout.status,
        candidate=candidate,
        candidate_weight=rollout.candidate_weight,
        shadow=rollout.is_shadowing,
        candidate_ready=_ready_or_warm_in_background(candidate),
    )


def _warm(version: ModelVersion) -> None:
    from registry.selectors import version_predictor

    if version.artifact_sha256 in _warmed:
        return
    predictor = version_predictor(version)
    # One real call: lazy initialisation inside the model (BLAS threads,
    # tokenizer tables) happens here rather than in someone's request.
    predictor.predict_proba(["预热"])
    _warmed.add(version.artifact_sha256)
    logger.info("warmed %s for serving", version)


def _ready_or_warm_in_background(version: ModelVersion) -> bool:
    """True when the version is loaded in this process; otherwise start
    loading it off the request path and answer False (no traffic yet)."""
    if version.artifact_sha256 in _warmed:
        return True
    with _lock:
        if version.pk in _warming:
            return False
        _warming.add(version.pk)

    def load() -> None:
        try:
            _warm(version)
        except Exception:
            logger.exception("could not warm %s for serving", version)
        finally:
            with _lock:
                _warming.discard(version.pk)
                # Rebuild at the next request so the candidate gets its share at once.
                _tables.pop(version.model_id, None)

    threading.Thread(target=load, name=f"warm-version-{version.pk}", daemon=True).start()
    return False


def warm_versions(model: RegisteredModel) -> list[ModelVersion]:
    """Load and warm every version that serves this model now (stable,
    previous stable, candidate), in this process, synchronously. For process
    start-up (a gunicorn post_fork hook, the benchmark) and for tests."""
    from rollouts.models import Rollout, ServingState

    versions: list[ModelVersion] = []
    state = ServingState.objects.filter(model_id=model.pk).first()
    if state is not None:
        versions += [v for v in (state.stable_version, state.previous_version) if v is not None]
    rollout = Rollout.objects.filter(model_id=model.pk, status__in=Rollout.ACTIVE_STATUSES).first()
    if rollout is not None:
        versions.append(rollout.candidate)
    for version in versions:
        _warm(version)
    invalidate_routing(model.pk)
    return versions
