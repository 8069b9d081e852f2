"""POST /api/v1/rollouts/{id}/promote/ with {"step": "next"}: one step
forward now (the promotion itself at the last step); without it, promote
keeps its meaning (skip to the end). Both as buttons on the rollout page."""

import pytest

from governance.models import AuditEvent
from registry.models import ModelVersion
from rollouts import services
from rollouts.models import Rollout, ServingState
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, api_client_for, page_client_for
from tests.rollouts.rollout_helpers import deploy_first

Status = Rollout.Status


@pytest.fixture
def rolling(engineer) -> Rollout:
    """v1 stable, v2 rolling out with the default steps (shadow, 5, 25, 50, 100 %)."""
    model = RegisteredModelFactory(name="zh-steps", created_by=engineer)
    for _ in range(2):
        ModelVersionFactory(model=model, status=ModelVersion.Status.APPROVED)
    deploy_first(model, actor=engineer)
    return services.rollout_start(actor=engineer, model=model, candidate=model.versions.get(number=2))


def promote(user, rollout, body):
    return api_client_for(user).post(f"/api/v1/rollouts/{rollout.pk}/promote/", body, format="json")


def test_next_step_moves_one_step_and_restarts_its_clocks(rolling, engineer):
    started = rolling.step_started_at

    response = promote(engineer, rolling, {"step": "next", "reason": "shadow agrees"})

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["current_step"], body["candidate_weight"], body["shadow"]) == (
        "progressing",
        1,
        5,
        False,
    )
    rolling.refresh_from_db()
    assert rolling.step_started_at > started and rolling.last_analysis_at == rolling.step_started_at
    event = AuditEvent.objects.get(action="rollout.advance")
    assert event.actor_username == "erin" and event.detail == {"reason": "shadow agrees", "step": 1, "by_hand": True}
    assert event.changes["before"]["current_step"] == 0 and event.changes["after"]["candidate_weight"] == 5
    assert ServingState.objects.get(model=rolling.model).stable_version.number == 1


def test_next_step_carries_a_paused_rollout_on(rolling, engineer):
    services.rollout_pause(actor=engineer, rollout=rolling, reason="look first")

    body = promote(engineer, rolling, {"step": "next"}).json()

    assert (body["status"], body["current_step"]) == ("progressing", 1)


def test_next_step_at_the_last_step_promotes(rolling, engineer):
    for expected in (1, 2, 3, 4):
        assert promote(engineer, rolling, {"step": "next"}).json()["current_step"] == expected

    body = promote(engineer, rolling, {"step": "next"}).json()

    assert body["status"] == "promoted"
    state = ServingState.objects.get(model=rolling.model)
    assert (state.stable_version.number, state.previous_version.number) == (2, 1)
    assert AuditEvent.objects.filter(action="rollout.advance").count() == 4
    assert AuditEvent.objects.get(action="rollout.promote").detail["by_hand"] is True


def test_promote_without_a_step_still_skips_to_the_end(rolling, engineer):
    body = promote(engineer, rolling, {}).json()
    assert body["status"] == "promoted" and body["current_step"] == 0


def test_an_unknown_step_is_400_and_changes_nothing(rolling, engineer):
    response = promote(engineer, rolling, {"step": "back"})
    assert response.status_code == 400 and "step" in response.json()["detail"]
    rolling.refresh_from_db()
    assert (rolling.status, rolling.current_step) == (Status.PROGRESSING, 0)


def test_next_step_of_a_finished_rollout_is_409(rolling, engineer):
    services.rollout_abort(actor=engineer, rollout=rolling)
    response = promote(engineer, rolling, {"step": "next"})
    assert response.status_code == 409 and response.json()["current_status"] == "aborted"
    assert AuditEvent.objects.filter(action="rollout.advance", outcome="denied").exists()


def test_next_step_needs_the_role_abort_needs(rolling, reviewer):
    response = promote(reviewer, rolling, {"step": "next"})
    assert response.status_code == 403
    rolling.refresh_from_db()
    assert rolling.current_step == 0


def test_both_buttons_on_the_rollout_page(rolling, engineer):
    client = page_client_for(engineer)
    page = client.get(f"/rollouts/{rolling.pk}/").content.decode()
    assert "Promote now" in page and "Next step" in page and "step 2: 5 %" in page

    refused = client.post(f"/rollouts/{rolling.pk}/step/", {"reason": "go"})
    assert refused.status_code == 400
    done = client.post(f"/rollouts/{rolling.pk}/step/", {"confirm": "on", "reason": "go"})

    assert done.status_code == 302
    rolling.refresh_from_db()
    assert (rolling.status, rolling.current_step) == (Status.PROGRESSING, 1)
