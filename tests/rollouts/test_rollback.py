"""POST /api/v1/models/{name}/rollback/ and the rollback button: back to the
previous deployed version at once, the rolled-back version to approved, the
promoted rollout marked, audited; refusals (no reason, nothing to go back
to, a rollout in progress, no role) change nothing. Races with a second
rollback and with an analysis tick, on committed transactions."""

import dataclasses
import threading
import time
from collections import Counter

import pytest
from django.db import connection, transaction
from django.utils import timezone

from governance.audit_integrity import verify_chain
from governance.models import AuditEvent
from registry.models import ModelVersion
from rollouts import routing, services
from rollouts.models import Rollout, ServingState
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, api_client_for, page_client_for
from tests.rollouts.rollout_helpers import deploy, deploy_first

Status = ModelVersion.Status


def _model_with_promotion(engineer, name: str = "zh-undo") -> Rollout:
    """v1 deployed first, v2 promoted over it (v1 kept as previous), v3 approved."""
    model = RegisteredModelFactory(name=name, created_by=engineer)
    for _ in range(3):
        ModelVersionFactory(model=model, status=Status.APPROVED)
    deploy_first(model, actor=engineer)
    rollout = services.rollout_start(actor=engineer, model=model, candidate=model.versions.get(number=2))
    return services.rollout_promote(actor=engineer, rollout=rollout, reason="looked good")


@pytest.fixture
def promoted(engineer) -> Rollout:
    return _model_with_promotion(engineer)


def _statuses(model) -> dict[int, str]:
    return dict(model.versions.values_list("number", "status"))


def _serving(model) -> tuple[int | None, int | None]:
    state = ServingState.objects.select_related("stable_version", "previous_version").get(model=model)
    return (
        state.stable_version.number if state.stable_version else None,
        state.previous_version.number if state.previous_version else None,
    )


def rollback(user, name="zh-undo", body=None):
    return api_client_for(user).post(f"/api/v1/models/{name}/rollback/", body or {}, format="json")


def test_rollback_serves_the_previous_version_and_returns_the_rolled_back_one_to_approved(promoted, engineer2):
    response = rollback(engineer2, body={"reason": "error rate doubled after the promotion"})

    assert response.status_code == 200, response.json()
    assert response.json() == {
        "model": "zh-undo",
        "stable": 1,
        "previous": None,
        "previous_retire_at": None,
        "active_rollout": None,
    }
    model = promoted.model
    assert _serving(model) == (1, None)
    assert _statuses(model) == {1: Status.DEPLOYED, 2: Status.APPROVED, 3: Status.APPROVED}
    listed = api_client_for(engineer2).get(f"/api/v1/rollouts/{promoted.pk}/").json()
    assert (listed["status"], listed["rolled_back_by"]) == ("promoted", "eli") and listed["rolled_back_at"]
    promoted.refresh_from_db()
    assert promoted.status == Rollout.Status.PROMOTED  # it was promoted; the rollback is recorded beside it
    assert promoted.rolled_back_at is not None and promoted.rolled_back_by == engineer2
    assert promoted.rollback_reason == "error rate doubled after the promotion"
    moved = AuditEvent.objects.get(action="version.rollback")
    assert (moved.version_number, moved.actor_username) == (2, "eli")
    assert moved.changes == {"before": {"status": "deployed"}, "after": {"status": "approved"}}
    event = AuditEvent.objects.get(action="rollout.rollback", outcome="ok")
    assert (event.object_id, event.model_name, event.version_number) == (str(promoted.pk), "zh-undo", 2)
    assert event.changes == {"before": {"stable": 2, "previous": 1}, "after": {"stable": 1, "previous": None}}
    assert event.detail["reason"] == "error rate doubled after the promotion"
    assert verify_chain()[1] is None


def test_the_rolled_back_version_may_roll_out_again(promoted, engineer):
    assert rollback(engineer, body={"reason": "latency"}).status_code == 200

    again = services.rollout_start(
        actor=engineer, model=promoted.model, candidate=promoted.model.versions.get(number=2)
    )

    assert again.status == Rollout.Status.PROGRESSING and again.stable.number == 1


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}])
def test_rollback_without_a_reason_is_400_and_changes_nothing(promoted, engineer, body):
    response = rollback(engineer, body=body)

    assert response.status_code == 400 and "reason is required" in response.json()["detail"]
    assert _serving(promoted.model) == (2, 1)
    assert _statuses(promoted.model)[2] == Status.DEPLOYED
    assert AuditEvent.objects.filter(action="rollout.rollback", outcome="denied").count() == 1


def test_a_reason_over_2000_characters_is_400(promoted, engineer):
    response = rollback(engineer, body={"reason": "x" * 2001})
    assert response.status_code == 400 and _serving(promoted.model) == (2, 1)


def test_a_second_rollback_is_409_with_the_current_state(promoted, engineer):
    assert rollback(engineer, body={"reason": "first"}).status_code == 200

    response = rollback(engineer, body={"reason": "again"})

    assert response.status_code == 409
    body = response.json()
    assert "no previous version to go back to" in body["detail"] and "roll out an approved version" in body["detail"]
    assert body["serving"] == {"stable": 1, "previous": None, "previous_retire_at": None, "active_rollout": None}
    assert _statuses(promoted.model) == {1: Status.DEPLOYED, 2: Status.APPROVED, 3: Status.APPROVED}


def test_rollback_while_a_rollout_is_in_progress_says_to_abort_it(promoted, engineer):
    active = services.rollout_start(
        actor=engineer, model=promoted.model, candidate=promoted.model.versions.get(number=3)
    )

    response = rollback(engineer, body={"reason": "panic"})

    assert response.status_code == 409
    assert (
        "abort it" in response.json()["detail"] and f"/api/v1/rollouts/{active.pk}/abort/" in response.json()["detail"]
    )
    assert response.json()["serving"]["active_rollout"] == active.pk
    assert _serving(promoted.model) == (2, 1)


def test_rollback_after_the_previous_version_was_retired_is_409(promoted, engineer):
    state = ServingState.objects.get(model=promoted.model)
    services.serving_retire_previous(now=state.previous_retire_at)

    response = rollback(engineer, body={"reason": "too late"})

    assert response.status_code == 409 and "no previous version" in response.json()["detail"]
    assert _statuses(promoted.model) == {1: Status.RETIRED, 2: Status.DEPLOYED, 3: Status.APPROVED}


def test_a_first_deployment_has_nothing_to_go_back_to(engineer):
    model = RegisteredModelFactory(name="zh-first", created_by=engineer)
    ModelVersionFactory(model=model, status=Status.APPROVED)
    deploy_first(model, actor=engineer)

    response = rollback(engineer, "zh-first", {"reason": "undo"})

    assert response.status_code == 409 and response.json()["serving"]["stable"] == 1
    assert _statuses(model) == {1: Status.DEPLOYED}


def test_a_model_that_serves_nothing_is_409(engineer):
    RegisteredModelFactory(name="zh-idle", created_by=engineer)
    response = rollback(engineer, "zh-idle", {"reason": "undo"})
    assert response.status_code == 409 and "serves nothing yet" in response.json()["detail"]


@pytest.mark.parametrize("persona", ["reviewer", "manager", "outsider"])
def test_only_those_who_may_abort_may_roll_back(promoted, persona, request):
    user = request.getfixturevalue(persona)

    response = rollback(user, body={"reason": "not mine to do"})

    assert response.status_code == 403 and response.json()["detail"]
    assert _serving(promoted.model) == (2, 1)
    # An outsider may not even read the model: refused before the service, like every other model route.
    refused = AuditEvent.objects.filter(action="rollout.rollback", outcome="denied", actor_username=user.username)
    assert refused.exists() == (persona != "outsider")


def test_rollback_shows_in_the_rollout_history_and_the_dossier(promoted, engineer, manager):
    rollback(engineer, body={"reason": "alerts on accuracy"})

    dossier = page_client_for(manager).get("/models/zh-undo/versions/2/dossier.json").json()

    [item] = [r for r in dossier["rollouts"] if r["id"] == promoted.pk]
    assert (item["status"], item["rolled_back_by"], item["rollback_reason"]) == (
        "promoted",
        "erin",
        "alerts on accuracy",
    )
    assert item["rolled_back_at"] is not None
    assert {"version.rollback", "rollout.rollback"} <= {e["action"] for e in dossier["audit_events"]}
    page = page_client_for(manager).get("/models/zh-undo/versions/2/dossier/").content.decode()
    assert "Rolled back" in page and "alerts on accuracy" in page
    listing = page_client_for(manager).get("/models/zh-undo/rollouts/").content.decode()
    assert "rolled back" in listing
    detail = page_client_for(manager).get(f"/rollouts/{promoted.pk}/").content.decode()
    assert 'id="rolled-back"' in detail and "alerts on accuracy" in detail


# --- routing: this process at commit, every other one within its routing TTL -----------


def test_every_serving_process_follows_a_rollback_within_the_routing_ttl(
    served_model, engineer, serving_env, django_capture_on_commit_callbacks
):
    deploy(served_model, served_model.versions.get(number=1), actor=engineer)
    rollout = services.rollout_start(actor=engineer, model=served_model, candidate=served_model.versions.get(number=2))
    services.rollout_promote(actor=engineer, rollout=rollout)
    routing.invalidate_routing(served_model.pk)
    routing.warm_versions(served_model)  # v2 stable, v1 previous: both loaded
    assert routing.routing_table(served_model).stable.number == 2
    # Another process's table, built before the rollback, that no invalidation reaches.
    elsewhere = routing.routing_table(served_model)

    with django_capture_on_commit_callbacks(execute=True):
        services.serving_rollback(actor=engineer, model=served_model, reason="bad answers")

    # This process: invalidated at commit, the next request routes to v1.
    answer = api_client_for(engineer).post("/api/v1/models/zh-serving/predict/", {"inputs": ["很好"]}, format="json")
    assert answer.status_code == 200 and answer.json()["predictions"][0]["version"] == 1
    # The other process: its table expires ROUTING_TTL_SECONDS after it was built.
    routing._tables[served_model.pk] = dataclasses.replace(
        elsewhere, built_at=time.monotonic() - routing.ROUTING_TTL_SECONDS
    )
    assert routing.routing_table(served_model).stable.number == 1


# --- pages: the button, its confirm box, CSRF and the server-side refusal ----------------


def test_rollback_button_on_the_rollouts_page_and_the_promoted_rollouts_page(promoted, engineer):
    client = page_client_for(engineer)
    for path in ("/models/zh-undo/rollouts/", f"/rollouts/{promoted.pk}/"):
        page = client.get(path).content.decode()
        assert 'action="/models/zh-undo/rollback/"' in page and 'name="confirm"' in page, path
        assert "I confirm: roll zh-undo back to v1" in page

    unconfirmed = client.post("/models/zh-undo/rollback/", {"reason": "spike"})
    assert unconfirmed.status_code == 400 and "Tick the box" in unconfirmed.content.decode()
    no_reason = client.post("/models/zh-undo/rollback/", {"confirm": "on"})
    assert no_reason.status_code == 400 and "Say why" in no_reason.content.decode()
    assert _serving(promoted.model) == (2, 1)

    done = client.post("/models/zh-undo/rollback/", {"confirm": "on", "reason": "spike"})

    assert done.status_code == 302 and done["Location"] == "/models/zh-undo/rollouts/"
    assert _serving(promoted.model) == (1, None)
    again = client.post("/models/zh-undo/rollback/", {"confirm": "on", "reason": "spike"})
    assert again.status_code == 409 and "no previous version" in again.content.decode()


def test_the_rollback_form_needs_its_csrf_token(promoted, engineer):
    client = page_client_for(engineer, enforce_csrf=True)
    response = client.post("/models/zh-undo/rollback/", {"confirm": "on", "reason": "spike"})
    assert response.status_code == 403 and _serving(promoted.model) == (2, 1)


def test_the_button_is_disabled_with_the_reason_while_a_rollout_runs(promoted, engineer):
    services.rollout_start(actor=engineer, model=promoted.model, candidate=promoted.model.versions.get(number=3))
    page = page_client_for(engineer).get("/models/zh-undo/rollouts/").content.decode()
    assert "abort it to send all traffic back" in page and "disabled>Roll back" in page


@pytest.mark.parametrize("persona", ["reviewer", "outsider"])
def test_the_server_refuses_a_rollback_post_without_the_role(promoted, persona, request):
    user = request.getfixturevalue(persona)
    response = page_client_for(user).post("/models/zh-undo/rollback/", {"confirm": "on", "reason": "spike"})
    assert response.status_code == 403 and _serving(promoted.model) == (2, 1)


# --- races (committed transactions, real PostgreSQL row locks) ---------------------------


def _waiting_for_locks() -> int:
    with connection.cursor() as cursor:
        # Activity is read from a snapshot kept for the whole transaction: drop it to see now.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        # This database only: other test databases may share the server.
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def _in_lock_order(model, calls: list) -> list:
    """Run each call in its own thread while this thread holds the model's
    serving state row; start each only once the one before is queued on the
    lock, then let go: they take the lock one after another in this order."""
    results: list = [None] * len(calls)
    done = [threading.Event() for _ in calls]

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as exc:  # the refusal is the result
            results[index] = exc
        finally:
            connection.close()
            done[index].set()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    with transaction.atomic():
        ServingState.objects.select_for_update().get(model=model)
        for count, thread in enumerate(threads, start=1):
            thread.start()
            deadline = time.monotonic() + 120
            while _waiting_for_locks() < count:
                # A call that ends while the lock is held never reached it: say what it did.
                assert not done[count - 1].is_set(), f"call {count} did not wait for the lock: {results[count - 1]!r}"
                assert time.monotonic() < deadline, f"call {count} never queued on the lock"
                time.sleep(0.01)
    for thread in threads:
        thread.join()
    return results


def test_two_rollbacks_at_once_one_wins_one_is_409(committed_db):
    from governance import roles
    from tests.conftest import UserFactory

    engineer = UserFactory(username="erin", role=roles.ENGINEER, password="!")
    engineer2 = UserFactory(username="eli", role=roles.ENGINEER, password="!")
    promoted = _model_with_promotion(engineer)
    clients = [api_client_for(user) for user in (engineer, engineer2)]

    responses = _in_lock_order(
        promoted.model,
        [
            lambda c=client: c.post("/api/v1/models/zh-undo/rollback/", {"reason": "race"}, format="json")
            for client in clients
        ],
    )

    assert [r.status_code for r in responses] == [200, 409]
    assert responses[1].json()["serving"]["stable"] == 1
    assert _serving(promoted.model) == (1, None)
    assert _statuses(promoted.model) == {1: Status.DEPLOYED, 2: Status.APPROVED, 3: Status.APPROVED}
    events = Counter(AuditEvent.objects.filter(action__endswith=".rollback").values_list("action", "outcome"))
    assert events == {("rollout.rollback", "ok"): 1, ("version.rollback", "ok"): 1, ("rollout.rollback", "denied"): 1}
    assert verify_chain()[1] is None


def _last_step_rollout(engineer) -> Rollout:
    """v2 stable over v1, and v3 at its last (only) step, baked: the next
    successful analysis promotes it."""
    promoted = _model_with_promotion(engineer)
    steps = [{"weight": 100, "shadow": False, "bake_seconds": 0}]
    return services.rollout_start(
        actor=engineer, model=promoted.model, candidate=promoted.model.versions.get(number=3), steps=steps
    )


def _promoting_tick(rollout: Rollout):
    now = timezone.now()
    return lambda: services.rollout_record_analysis(
        rollout=rollout,
        expected_last_analysis_at=rollout.last_analysis_at,
        expected_step=rollout.current_step,
        window_start=rollout.step_started_at,
        window_end=now,
        measurements=[],
        verdict="successful",
        now=now,
    )


@pytest.mark.parametrize("first", ["tick", "rollback"])
def test_a_rollback_racing_an_analysis_tick_sees_a_consistent_state(committed_db, first):
    from governance import roles
    from tests.conftest import UserFactory

    engineer = UserFactory(username="erin", role=roles.ENGINEER, password="!")
    rollout = _last_step_rollout(engineer)
    model = rollout.model
    calls = {
        "tick": _promoting_tick(rollout),
        "rollback": lambda: services.serving_rollback(actor=engineer, model=model, reason="race"),
    }
    order = [first, "rollback" if first == "tick" else "tick"]

    results = dict(zip(order, _in_lock_order(model, [calls[name] for name in order])))

    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.PROMOTED and results["tick"].action == "promoted"
    if first == "tick":
        # The tick promoted v3 first; the rollback then undid that promotion.
        assert isinstance(results["rollback"], ServingState)
        assert _serving(model) == (2, None)
        assert _statuses(model) == {1: Status.RETIRED, 2: Status.DEPLOYED, 3: Status.APPROVED}
        assert rollout.rolled_back_at is not None
    else:
        # The rollout was still active: refused with what to do instead, and the tick went on.
        assert "abort it" in results["rollback"].message
        assert _serving(model) == (3, 2)
        assert _statuses(model) == {1: Status.RETIRED, 2: Status.DEPLOYED, 3: Status.DEPLOYED}
        assert rollout.rolled_back_at is None
    assert verify_chain()[1] is None
