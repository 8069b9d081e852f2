"""Routing of live traffic between the stable version and a candidate:
sticky and monotone by key, shares that match the weight, random without a
key, and a routing table that follows the database."""

import os
import subprocess
import sys
import time

from django.conf import settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from registry.models import ModelVersion, RegisteredModel
from rollouts import routing
from rollouts.routing import RoutingTable, route_key
from tests.rollouts.rollout_helpers import deploy, start_canary

KEYS = [f"user-{n}" for n in range(5000)]


def table(weight: int, rollout_id: int = 7) -> RoutingTable:
    model = RegisteredModel(pk=1, name="m")
    stable = ModelVersion(pk=1, model=model, number=1)
    candidate = ModelVersion(pk=2, model=model, number=2)
    return RoutingTable(
        model=model,
        stable=stable,
        rollout_id=rollout_id,
        candidate=candidate,
        candidate_weight=weight,
        candidate_ready=True,
    )


def candidate_keys(weight: int, rollout_id: int = 7) -> set[str]:
    routes = table(weight, rollout_id)
    return {key for key in KEYS if routes.choose(key)[1] == "candidate"}


def test_route_key_is_a_fine_bucket_in_range():
    buckets = [route_key(3, key) for key in KEYS]
    assert all(0.0 <= b < 100.0 for b in buckets)
    # Fine resolution: thousands of keys, (almost) all distinct buckets.
    assert len(set(buckets)) == len(KEYS)


def test_keys_are_sticky_and_monotone_over_every_weight():
    previous = set()
    for weight in range(101):
        current = candidate_keys(weight)
        assert previous <= current, f"a key left the candidate when the weight rose to {weight}"
        # Sticky: asking again gives the same answer for every key.
        assert current == candidate_keys(weight)
        previous = current
    assert candidate_keys(0) == set() and candidate_keys(100) == set(KEYS)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    rollout_id=st.integers(min_value=1, max_value=2**31),
    key=st.text(min_size=1, max_size=200),
    weights=st.tuples(st.integers(0, 100), st.integers(0, 100)),
)
def test_property_candidate_at_w_stays_candidate_at_every_higher_weight(rollout_id, key, weights):
    low, high = sorted(weights)
    if table(low, rollout_id).choose(key)[1] == "candidate":
        assert table(high, rollout_id).choose(key)[1] == "candidate"
    assert table(low, rollout_id).choose(key) == table(low, rollout_id).choose(key)


def test_observed_share_of_keys_matches_the_weight():
    for weight in (1, 5, 25, 50, 75):
        share = len(candidate_keys(weight)) / len(KEYS) * 100
        assert abs(share - weight) < 2.0, (weight, share)


def test_each_rollout_draws_its_own_sample_of_keys():
    assert candidate_keys(25, rollout_id=1) != candidate_keys(25, rollout_id=2)


def test_without_a_key_inputs_are_random_by_weight():
    routes = table(30)
    draws = [routes.choose(None)[1] for _ in range(20000)]
    share = draws.count("candidate") / len(draws) * 100
    assert abs(share - 30) < 1.5, share


def test_the_bucket_of_a_key_is_the_same_in_another_process():
    # Every gunicorn worker must route a key the same way (no per-process hash seed).
    code = (
        "import django; django.setup(); from rollouts.routing import route_key; print(repr(route_key(11, 'user-42')))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "DJANGO_SETTINGS_MODULE": "glassbox.settings"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, capture_output=True, text=True, check=True, env=env
    )
    assert float(out.stdout.strip()) == route_key(11, "user-42")


def test_a_candidate_that_is_not_loaded_gets_no_traffic():
    routes = RoutingTable(**{**table(100).__dict__, "candidate_ready": False})
    assert {routes.choose(key)[1] for key in KEYS[:200]} == {"stable"}


# --- the routing table follows the database -----------------------------------------------


def test_routing_table_follows_serving_state_and_the_active_rollout(served_model, engineer, serving_env):
    v1, v2 = served_model.versions.order_by("number")
    assert routing.routing_table(served_model).stable is None

    deploy(served_model, v1, actor=engineer)
    routes = routing.routing_table(served_model)
    assert (routes.stable.number, routes.candidate, routes.rollout_id) == (1, None, None)

    rollout = start_canary(served_model, v2, actor=engineer, weight=25)
    routes = routing.routing_table(served_model)
    assert (routes.stable.number, routes.candidate.number, routes.rollout_id) == (1, 2, rollout.pk)
    assert (routes.candidate_weight, routes.shadow, routes.candidate_ready) == (25, False, True)


def test_routing_table_is_cached_until_invalidated(served_model, engineer, serving_env):
    v1, v2 = served_model.versions.order_by("number")
    deploy(served_model, v1, actor=engineer)
    before = routing.routing_table(served_model)
    assert routing.routing_table(served_model) is before  # no rebuild within the TTL
    rollout = start_canary(served_model, v2, actor=engineer, weight=50)  # warm_versions invalidates
    after = routing.routing_table(served_model)
    assert after is not before and after.rollout_id == rollout.pk


def test_a_stale_table_is_rebuilt_after_the_ttl(served_model, engineer, serving_env):
    v1, _ = served_model.versions.order_by("number")
    deploy(served_model, v1, actor=engineer)
    first = routing.routing_table(served_model)
    time.sleep(routing.ROUTING_TTL_SECONDS + 0.05)
    assert routing.routing_table(served_model) is not first


def test_an_unloaded_candidate_is_warmed_in_the_background_then_routed(served_model, engineer, serving_env):
    from registry.predictors import clear_predictor_cache

    v1, v2 = served_model.versions.order_by("number")
    deploy(served_model, v1, actor=engineer)
    from rollouts import services

    services.rollout_start(
        actor=engineer, model=served_model, candidate=v2, steps=[{"weight": 100, "shadow": False, "bake_seconds": 60}]
    )
    routing.clear_routing_cache()
    routing._warmed.clear()
    clear_predictor_cache()
    routing._warm(v1)  # the stable is loaded; the candidate is not
    first = routing.routing_table(served_model)
    assert first.candidate is not None and first.candidate_ready is False
    deadline = time.monotonic() + 30
    while not routing.routing_table(served_model).candidate_ready and time.monotonic() < deadline:
        time.sleep(0.05)
    assert routing.routing_table(served_model).choose("anyone") == (
        routing.routing_table(served_model).candidate,
        "candidate",
    )
