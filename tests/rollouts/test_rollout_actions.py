"""The manual gates: promote, pause, resume, abort - who may, what each
changes (rollout, serving state, version lifecycle, routing) and what is
refused on a finished rollout."""

from datetime import timedelta

import pytest
from django.utils import timezone

from glassbox.errors import Conflict, NotPermitted
from governance.models import AuditEvent
from registry.models import ModelVersion
from rollouts import routing, services
from rollouts.models import Rollout, ServingState
from tests.conftest import ModelVersionFactory, RegisteredModelFactory
from tests.rollouts.rollout_helpers import deploy_first

Status = ModelVersion.Status


@pytest.fixture
def rolling(engineer) -> Rollout:
    """v1 stable, v2 rolling out (version rows without artifacts: no model is loaded here)."""
    model = RegisteredModelFactory(name="zh-gates", created_by=engineer)
    for _ in range(3):
        ModelVersionFactory(model=model, status=Status.APPROVED)
    deploy_first(model, actor=engineer)
    return services.rollout_start(actor=engineer, model=model, candidate=model.versions.get(number=2))


def _statuses(model) -> dict[int, str]:
    return dict(model.versions.values_list("number", "status"))


def test_promote_makes_the_candidate_stable_and_keeps_the_old_one_for_rollback(rolling, engineer, settings):
    settings.GLASSBOX_RETIRE_PREVIOUS_AFTER_SECONDS = 3600
    before = timezone.now()

    rollout = services.rollout_promote(actor=engineer, rollout=rolling, reason="looks good on the dashboards")

    assert rollout.status == Rollout.Status.PROMOTED and rollout.finished_at is not None
    assert rollout.status_reason == "looks good on the dashboards"
    state = ServingState.objects.get(model=rolling.model)
    assert (state.stable_version.number, state.previous_version.number) == (2, 1)
    assert before + timedelta(seconds=3600) <= state.previous_retire_at <= timezone.now() + timedelta(seconds=3600)
    assert _statuses(rolling.model) == {1: Status.DEPLOYED, 2: Status.DEPLOYED, 3: Status.APPROVED}
    event = AuditEvent.objects.get(action="rollout.promote")
    assert event.actor_username == "erin" and event.changes["after"]["status"] == "promoted"
    assert AuditEvent.objects.filter(action="version.deploy", version_number=2).exists()


def test_a_second_promotion_retires_the_older_previous_version(rolling, engineer):
    services.rollout_promote(actor=engineer, rollout=rolling)
    next_rollout = services.rollout_start(
        actor=engineer, model=rolling.model, candidate=rolling.model.versions.get(number=3)
    )

    services.rollout_promote(actor=engineer, rollout=next_rollout)

    state = ServingState.objects.get(model=rolling.model)
    assert (state.stable_version.number, state.previous_version.number) == (3, 2)
    assert _statuses(rolling.model) == {1: Status.RETIRED, 2: Status.DEPLOYED, 3: Status.DEPLOYED}


def test_previous_version_retires_when_its_time_is_up(rolling, engineer):
    services.rollout_promote(actor=engineer, rollout=rolling)
    state = ServingState.objects.get(model=rolling.model)

    assert services.serving_retire_previous(now=state.previous_retire_at - timedelta(seconds=1)) == []
    retired = services.serving_retire_previous(now=state.previous_retire_at)

    assert [v.number for v in retired] == [1]
    state.refresh_from_db()
    assert state.previous_version is None and state.stable_version.number == 2
    assert _statuses(rolling.model)[1] == Status.RETIRED
    event = AuditEvent.objects.get(action="version.retire")
    assert event.actor_id is None and event.version_number == 1


def test_pause_holds_the_step_and_resume_restarts_its_bake_clock(rolling, engineer):
    started = rolling.step_started_at

    paused = services.rollout_pause(actor=engineer, rollout=rolling, reason="looking at a complaint")
    assert paused.status == Rollout.Status.PAUSED and paused.status_reason == "looking at a complaint"
    assert paused.is_shadowing  # a paused rollout keeps its step

    resumed = services.rollout_resume(actor=engineer, rollout=paused)
    assert resumed.status == Rollout.Status.PROGRESSING and resumed.status_reason == ""
    assert resumed.step_started_at > started and resumed.current_step == 0
    assert list(
        AuditEvent.objects.filter(action__in=["rollout.pause", "rollout.resume"])
        .order_by("id")
        .values_list("action", "actor_username")
    ) == [("rollout.pause", "erin"), ("rollout.resume", "erin")]


def test_only_a_paused_rollout_resumes(rolling, engineer):
    with pytest.raises(Conflict, match="only a paused rollout can resume") as refused:
        services.rollout_resume(actor=engineer, rollout=rolling)
    assert refused.value.extra["current_status"] == "progressing"


def test_abort_sends_everything_back_to_stable_and_keeps_the_candidate_approved(rolling, engineer):
    rollout = services.rollout_abort(actor=engineer, rollout=rolling, reason="customers complain")

    assert rollout.status == Rollout.Status.ABORTED and rollout.status_reason == "customers complain"
    assert rollout.candidate_weight == 0 and not rollout.is_shadowing
    assert ServingState.objects.get(model=rolling.model).stable_version.number == 1
    assert _statuses(rolling.model) == {1: Status.DEPLOYED, 2: Status.APPROVED, 3: Status.APPROVED}
    assert AuditEvent.objects.get(action="rollout.abort").detail["reason"] == "customers complain"


@pytest.mark.parametrize("action", ["promote", "pause", "resume", "abort"])
@pytest.mark.parametrize("finish", ["promote", "abort"])
def test_a_finished_rollout_takes_no_more_actions(rolling, engineer, action, finish):
    getattr(services, f"rollout_{finish}")(actor=engineer, rollout=rolling)
    rolling.refresh_from_db()
    finished_status = rolling.status
    kwargs = {} if action == "resume" else {"reason": "again"}

    with pytest.raises(Conflict) as refused:
        getattr(services, f"rollout_{action}")(actor=engineer, rollout=rolling, **kwargs)

    assert refused.value.extra["current_status"] == finished_status
    rolling.refresh_from_db()
    assert rolling.status == finished_status
    assert AuditEvent.objects.filter(action=f"rollout.{action}", outcome="denied").exists()


@pytest.mark.parametrize("persona", ["reviewer", "manager", "outsider"])
@pytest.mark.parametrize("action", ["promote", "pause", "abort"])
def test_only_engineers_act_on_rollouts(rolling, persona, action, request):
    user = request.getfixturevalue(persona)

    with pytest.raises(NotPermitted):
        getattr(services, f"rollout_{action}")(actor=user, rollout=rolling)

    rolling.refresh_from_db()
    assert rolling.status == Rollout.Status.PROGRESSING
    refusal = AuditEvent.objects.get(action=f"rollout.{action}", outcome="denied")
    assert refusal.actor_username == user.username


def test_abort_returns_routing_to_stable_at_once(served_model, engineer, django_capture_on_commit_callbacks):
    deploy_first(served_model, actor=engineer)
    steps = [{"weight": 50, "bake_seconds": 60}, {"weight": 100, "bake_seconds": 60}]
    with django_capture_on_commit_callbacks(execute=True):
        rollout = services.rollout_start(
            actor=engineer, model=served_model, candidate=served_model.versions.get(number=2), steps=steps
        )
    routing.warm_versions(served_model)
    table = routing.routing_table(served_model)
    assert (table.candidate.number, table.candidate_weight) == (2, 50)

    # The service drops this process's routing table when its transaction commits.
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_abort(actor=engineer, rollout=rollout, reason="stop")

    table = routing.routing_table(served_model)
    assert table.candidate is None and table.stable.number == 1
    assert {table.choose(f"key-{i}")[1] for i in range(200)} == {"stable"}
