"""Starting a rollout: who may, which versions, which steps and thresholds,
the first deployment, and one active rollout per model even under a race."""

import threading

import pytest
from django.db import DatabaseError, connection

from glassbox.errors import Conflict, GlassboxError, InvalidInput, NotPermitted
from governance.models import AuditEvent
from registry.models import ModelVersion
from rollouts import services
from rollouts.models import DEFAULT_STEPS, DEFAULT_THRESHOLDS, Rollout, ServingState, VersionReference
from tests.conftest import ModelVersionFactory, RegisteredModelFactory
from tests.rollouts.rollout_helpers import deploy_first, upload_dataset


@pytest.fixture
def deployed(engineer):
    """zh-serving with v1 stable and v2 approved, ready to roll out. Version
    rows without artifacts: nothing here loads a model, and real uploads
    (with their load checks) would only cost seconds per test."""
    model = RegisteredModelFactory(name="zh-serving", created_by=engineer)
    for _ in range(2):
        ModelVersionFactory(model=model, status=ModelVersion.Status.APPROVED)
    deploy_first(model, actor=engineer)
    return model


def _start(model, number, actor, **options) -> Rollout:
    return services.rollout_start(actor=actor, model=model, candidate=model.versions.get(number=number), **options)


def test_first_deployment_promotes_at_once(served_model, engineer):
    rollout = _start(served_model, 1, engineer)  # real versions: a first deployment loads nothing either

    assert rollout.status == Rollout.Status.PROMOTED
    assert rollout.stable is None
    assert rollout.status_reason == services.FIRST_DEPLOYMENT_REASON
    assert rollout.finished_at is not None
    state = ServingState.objects.get(model=served_model)
    assert state.stable_version.number == 1 and state.previous_version is None
    assert served_model.versions.get(number=1).status == ModelVersion.Status.DEPLOYED
    actions = set(AuditEvent.objects.filter(outcome="ok").values_list("action", flat=True))
    assert {"rollout.start", "version.deploy"} <= actions


def test_start_begins_the_first_step_against_the_stable_version(deployed, engineer):
    rollout = _start(deployed, 2, engineer)

    assert rollout.status == Rollout.Status.PROGRESSING
    assert rollout.stable.number == 1 and rollout.candidate.number == 2
    assert rollout.steps == DEFAULT_STEPS and rollout.current_step == 0
    assert rollout.is_shadowing and rollout.candidate_weight == 0
    assert rollout.thresholds == DEFAULT_THRESHOLDS
    assert rollout.step_started_at is not None
    # The candidate is not deployed until it is promoted.
    assert deployed.versions.get(number=2).status == ModelVersion.Status.APPROVED
    event = AuditEvent.objects.filter(action="rollout.start").latest("id")
    assert (event.actor_username, event.model_name, event.version_number) == ("erin", "zh-serving", 2)
    assert event.detail["stable"] == 1 and event.detail["first_deployment"] is False


def test_thresholds_are_merged_over_the_defaults(deployed, engineer):
    rollout = _start(deployed, 2, engineer, thresholds={"max_error_rate": 0.05, "min_requests": 5})
    assert rollout.thresholds == {**DEFAULT_THRESHOLDS, "max_error_rate": 0.05, "min_requests": 5}


def test_reference_dataset_is_profiled_with_the_candidates_characters(served_model, engineer, demo_models):
    deploy_first(served_model, actor=engineer)
    dataset = upload_dataset(uploader=engineer, path=demo_models["holdout_csv"])
    _start(served_model, 2, engineer, reference_dataset=dataset)

    reference = VersionReference.objects.get(version__model=served_model, version__number=2)
    assert reference.dataset == dataset
    assert reference.profile["texts"] == dataset.row_count
    assert 0 <= reference.profile["unknown_rate"] < 0.5  # the TF-IDF vocabulary knows most holdout characters
    assert AuditEvent.objects.filter(action="version.reference_set", version_number=2).exists()


@pytest.mark.parametrize(
    "status",
    [
        ModelVersion.Status.REGISTERED,
        ModelVersion.Status.IN_REVIEW,
        ModelVersion.Status.REJECTED,
        ModelVersion.Status.RETIRED,
    ],
)
def test_only_an_approved_version_can_roll_out(deployed, engineer, status):
    version = ModelVersionFactory(model=deployed, status=status)

    with pytest.raises(Conflict, match="only an approved version can roll out") as refused:
        services.rollout_start(actor=engineer, model=deployed, candidate=version)

    assert refused.value.extra["current_status"] == status
    assert not Rollout.objects.filter(candidate=version).exists()
    refusal = AuditEvent.objects.get(action="rollout.start", outcome="denied")
    assert "only an approved version" in refusal.detail["reason"]


def test_the_deployed_version_cannot_roll_out_again(deployed, engineer):
    with pytest.raises(Conflict):
        _start(deployed, 1, engineer)


def test_a_version_of_another_model_is_refused(deployed, engineer):
    other = ModelVersionFactory(model=RegisteredModelFactory(created_by=engineer), status=ModelVersion.Status.APPROVED)
    with pytest.raises(InvalidInput, match="is not a version of zh-serving"):
        services.rollout_start(actor=engineer, model=deployed, candidate=other)
    assert Rollout.objects.filter(model=deployed).count() == 1


@pytest.mark.parametrize("persona", ["reviewer", "manager", "outsider"])
def test_only_engineers_start_rollouts(deployed, persona, request):
    user = request.getfixturevalue(persona)
    with pytest.raises(NotPermitted):
        _start(deployed, 2, user)
    assert not Rollout.objects.filter(candidate__number=2).exists()
    assert AuditEvent.objects.filter(action="rollout.start", outcome="denied", actor_username=user.username).exists()


BAD_STEPS = [
    (
        [{"weight": 50, "bake_seconds": 0}, {"weight": 25, "bake_seconds": 0}, {"weight": 100, "bake_seconds": 0}],
        "step 2: weight 25 must be above the previous step's 50",
    ),
    (
        [{"weight": 50, "bake_seconds": 0}, {"weight": 50, "bake_seconds": 0}, {"weight": 100, "bake_seconds": 0}],
        "step 2: weight 50 must be above",
    ),
    (
        [{"weight": 10, "bake_seconds": 0}, {"weight": 120, "bake_seconds": 0}],
        "step 2: weight must be a whole percentage",
    ),
    (
        [{"weight": -5, "bake_seconds": 0}, {"weight": 100, "bake_seconds": 0}],
        "step 1: weight must be a whole percentage",
    ),
    (
        [{"weight": 10, "bake_seconds": 0}, {"weight": 0, "shadow": True, "bake_seconds": 0}, {"weight": 100}],
        "step 2: a shadow step may only come first",
    ),
    ([{"weight": 5, "shadow": True}, {"weight": 100}], "step 1: a shadow step has weight 0"),
    ([{"weight": 5}, {"weight": 50}], "step 2: the last step must send 100%"),
    ([{"weight": 0, "shadow": True}], "step 1: the last step must send 100%"),
    ([{"weight": 10.5}, {"weight": 100}], "step 1: weight must be a whole percentage"),
    ([{"weight": 10, "bake_seconds": 8 * 24 * 3600}, {"weight": 100}], "step 1: bake_seconds must be"),
    ([{"weight": 10, "pause": True}, {"weight": 100}], "step 1: unknown field pause"),
    ([], "steps must be a non-empty list"),
    ("fast", "steps must be a non-empty list"),
]


@pytest.mark.parametrize("steps, message", BAD_STEPS)
def test_bad_steps_are_refused_naming_the_step(deployed, engineer, steps, message):
    with pytest.raises(InvalidInput) as refused:
        _start(deployed, 2, engineer, steps=steps)
    assert message in refused.value.message
    assert not Rollout.objects.filter(candidate__number=2).exists()


@pytest.mark.parametrize(
    "thresholds, message",
    [
        ({"max_errors": 0.1}, "Unknown thresholds: max_errors"),
        ({"max_error_rate": 1.5}, "threshold max_error_rate must be a number from 0.0 to 1.0"),
        ({"min_requests": 0}, "threshold min_requests must be a whole number"),
        ({"failure_limit": 1.5}, "threshold failure_limit must be a whole number"),
        ({"max_label_divergence": "0.1"}, "threshold max_label_divergence must be a number"),
        ({"max_input_drift": True}, "threshold max_input_drift must be a number"),
        (["max_error_rate"], "thresholds must be an object"),
    ],
)
def test_bad_thresholds_are_refused(deployed, engineer, thresholds, message):
    with pytest.raises(InvalidInput, match=message):
        _start(deployed, 2, engineer, thresholds=thresholds)
    assert not Rollout.objects.filter(candidate__number=2).exists()


@pytest.mark.parametrize("interval", [0, 9, 24 * 3600 + 1, 30.5])
def test_analysis_interval_must_be_between_ten_seconds_and_a_day(deployed, engineer, interval):
    with pytest.raises(InvalidInput, match="analysis_interval_seconds"):
        _start(deployed, 2, engineer, analysis_interval_seconds=interval)


def test_a_second_active_rollout_is_refused(deployed, engineer):
    first = _start(deployed, 2, engineer)
    third = ModelVersionFactory(model=deployed, status=ModelVersion.Status.APPROVED)

    with pytest.raises(Conflict, match=f"rollout #{first.pk} is already active"):
        services.rollout_start(actor=engineer, model=deployed, candidate=third)

    assert list(Rollout.objects.filter(status__in=Rollout.ACTIVE_STATUSES)) == [first]


def test_after_an_abort_the_candidate_can_roll_out_again(deployed, engineer):
    first = _start(deployed, 2, engineer)
    services.rollout_abort(actor=engineer, rollout=first, reason="wrong thresholds")

    second = _start(deployed, 2, engineer, thresholds={"min_requests": 50})

    assert second.status == Rollout.Status.PROGRESSING and second.pk != first.pk


def test_two_rollouts_started_at_once_one_is_refused(committed_db, deployed, engineer):
    """Two engineers press start at the same moment, for two candidates: the
    lock on the model's serving state (and the partial unique index behind
    it) lets exactly one through; the other gets 409."""
    third = ModelVersionFactory(model=deployed, status=ModelVersion.Status.APPROVED)
    candidates = [deployed.versions.get(number=2), third]
    barrier = threading.Barrier(len(candidates))
    outcomes: list = []

    def start(candidate):
        try:
            barrier.wait(timeout=10)
            outcomes.append(services.rollout_start(actor=engineer, model=deployed, candidate=candidate))
        except (GlassboxError, DatabaseError) as exc:  # collected and asserted on below
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(candidate,)) for candidate in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    started = [o for o in outcomes if isinstance(o, Rollout)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(started) == 1 and len(refused) == 1, outcomes
    assert isinstance(refused[0], Conflict) and refused[0].status_code == 409
    assert f"rollout #{started[0].pk} is already active" in refused[0].message
    assert Rollout.objects.filter(model=deployed, status__in=Rollout.ACTIVE_STATUSES).count() == 1
    assert AuditEvent.objects.filter(action="rollout.start", outcome="denied").count() == 1
