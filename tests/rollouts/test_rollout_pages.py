"""The rollout pages: the rollout page (timeline, weights, analysis runs,
manual gates with a confirmation step), the list with its start form, and
who may see and do what."""

import re
from datetime import timedelta

import pytest

from governance.models import AuditEvent
from rollouts import services
from rollouts.analysis import rollout_analyse
from rollouts.models import Rollout
from tests.conftest import page_client_for
from tests.rollouts.rollout_helpers import deploy_first

SCRIPT = "<script>alert('x')</script>"
STEPS = [
    {"weight": 0, "shadow": True, "bake_seconds": 600},
    {"weight": 25, "shadow": False, "bake_seconds": 600},
    {"weight": 100, "shadow": False, "bake_seconds": 600},
]


@pytest.fixture
def rollout(served_model, engineer) -> Rollout:
    """v1 serving, v2 rolling out (shadow step first)."""
    deploy_first(served_model, actor=engineer)
    return services.rollout_start(
        actor=engineer, model=served_model, candidate=served_model.versions.get(number=2), steps=STEPS
    )


def _gate_forms(html: str) -> set[str]:
    return set(re.findall(r'action="/rollouts/\d+/(promote|pause|resume|abort)/"', html))


def test_rollout_page_shows_timeline_weights_and_buttons(rollout, engineer):
    response = page_client_for(engineer).get(f"/rollouts/{rollout.pk}/")

    html = response.content.decode()
    assert response.status_code == 200
    assert html.count('class="step step-') == 3
    assert 'class="step step-current"' in html and html.count('class="step step-pending"') == 2
    assert "Step 2: 25 %" in html and "shadow (0 % live, mirrored)" in html
    assert 'id="stable-weight">100 %' in html and 'id="candidate-weight">0 %' in html
    assert _gate_forms(html) == {"promote", "pause", "resume", "abort"}
    assert "csrfmiddlewaretoken" in html
    # Resume makes no sense for a progressing rollout: disabled, with the reason.
    assert "Only a paused rollout can resume; this one is progressing." in html


def test_analysis_runs_show_values_against_thresholds(rollout, engineer):
    # No traffic at all: the real analysis finds it inconclusive and pauses.
    run = rollout_analyse(
        rollout=rollout, now=rollout.step_started_at + timedelta(seconds=rollout.analysis_interval_seconds)
    )
    assert run is not None and run.verdict == "inconclusive"

    html = page_client_for(engineer).get(f"/rollouts/{rollout.pk}/").content.decode()

    assert 'class="run verdict-inconclusive"' in html
    for measurement in run.measurements:
        assert f"<td>{measurement['name']}</td>" in html
    assert '<span id="rollout-status" class="status status-paused">paused</span>' in html
    # A measurement not taken says why on the page (latency is not compared on mirrored calls).
    latency = next(m for m in run.measurements if m["name"] == "latency_p95_ratio")
    assert latency["verdict"] == "not_measured"
    assert f'<span class="not-measured-reason">not measured: {latency["reason"]}</span>' in html


def test_reviewer_sees_the_rollout_but_no_buttons(rollout, reviewer):
    response = page_client_for(reviewer).get(f"/rollouts/{rollout.pk}/")

    html = response.content.decode()
    assert response.status_code == 200
    assert _gate_forms(html) == set()
    assert "Only maintainers of the model's team may promote, pause, resume or abort rollouts." in html


def test_outsider_gets_403_everywhere(rollout, outsider):
    client = page_client_for(outsider)

    assert client.get(f"/rollouts/{rollout.pk}/").status_code == 403
    assert client.get("/models/zh-serving/rollouts/").status_code == 403
    assert client.post(f"/rollouts/{rollout.pk}/abort/", {"confirm": "on"}).status_code == 403
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.PROGRESSING


def test_actions_are_post_only(rollout, engineer):
    assert page_client_for(engineer).get(f"/rollouts/{rollout.pk}/abort/").status_code == 405
    assert page_client_for(engineer).get(f"/rollouts/{rollout.pk}/explode/").status_code == 405
    assert page_client_for(engineer).post(f"/rollouts/{rollout.pk}/explode/", {"confirm": "on"}).status_code == 404


def test_action_without_csrf_token_is_refused(rollout, engineer):
    response = page_client_for(engineer, enforce_csrf=True).post(f"/rollouts/{rollout.pk}/abort/", {"confirm": "on"})

    assert response.status_code == 403
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.PROGRESSING
    assert not AuditEvent.objects.filter(action="rollout.abort").exists()


def test_action_needs_the_confirm_box(rollout, engineer):
    response = page_client_for(engineer).post(f"/rollouts/{rollout.pk}/abort/", {"reason": "oops"})

    assert response.status_code == 400
    assert "Tick the box to confirm." in response.content.decode()
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.PROGRESSING
    assert not AuditEvent.objects.filter(action="rollout.abort").exists()


def test_confirmed_pause_and_resume_go_through_the_services(rollout, engineer):
    client = page_client_for(engineer, enforce_csrf=True)
    page = client.get(f"/rollouts/{rollout.pk}/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

    paused = client.post(
        f"/rollouts/{rollout.pk}/pause/", {"confirm": "on", "reason": "watching", "csrfmiddlewaretoken": token}
    )
    rollout.refresh_from_db()
    assert paused.status_code == 302 and rollout.status == Rollout.Status.PAUSED
    resumed = client.post(f"/rollouts/{rollout.pk}/resume/", {"confirm": "on", "csrfmiddlewaretoken": token})
    rollout.refresh_from_db()

    assert resumed.status_code == 302 and rollout.status == Rollout.Status.PROGRESSING
    events = AuditEvent.objects.filter(action__in=["rollout.pause", "rollout.resume"]).order_by("id")
    assert [(e.action, e.actor_username, e.detail.get("reason")) for e in events] == [
        ("rollout.pause", "erin", "watching"),
        ("rollout.resume", "erin", ""),
    ]


def test_confirmed_abort_sends_all_traffic_back_to_stable(rollout, engineer):
    response = page_client_for(engineer).post(
        f"/rollouts/{rollout.pk}/abort/", {"confirm": "on", "reason": "bad answers"}
    )

    rollout.refresh_from_db()
    assert response.status_code == 302
    assert (rollout.status, rollout.candidate_weight, rollout.status_reason) == ("aborted", 0, "bad answers")
    html = page_client_for(engineer).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert 'id="stable-weight">100 %' in html and 'class="step step-stopped"' in html
    assert "The rollout is aborted; it cannot be promoted now." in html


def test_a_move_the_state_does_not_allow_shows_the_error_in_the_form(rollout, engineer):
    response = page_client_for(engineer).post(f"/rollouts/{rollout.pk}/resume/", {"confirm": "on"})

    assert response.status_code == 409
    assert "only a paused rollout can resume" in response.content.decode()
    assert AuditEvent.objects.filter(action="rollout.resume", outcome="denied").exists()


def test_reviewer_action_is_refused_and_recorded(rollout, reviewer):
    response = page_client_for(reviewer).post(f"/rollouts/{rollout.pk}/abort/", {"confirm": "on"})

    assert response.status_code == 403
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.PROGRESSING
    refusal = AuditEvent.objects.get(action="rollout.abort")
    assert (refusal.outcome, refusal.actor_username) == ("denied", "rita")


def test_script_in_a_reason_renders_inert(rollout, engineer):
    page_client_for(engineer).post(f"/rollouts/{rollout.pk}/pause/", {"confirm": "on", "reason": SCRIPT})

    html = page_client_for(engineer).get(f"/rollouts/{rollout.pk}/").content.decode()
    assert SCRIPT not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html


# --- the list and its start form ------------------------------------------------------


def test_engineer_starts_a_rollout_from_the_list_page(served_model, engineer):
    deploy_first(served_model, actor=engineer)
    client = page_client_for(engineer)
    page = client.get("/models/zh-serving/rollouts/").content.decode()
    assert 'id="start-rollout"' in page and ">v2</option>" in page and ">v1</option>" not in page

    candidate = served_model.versions.get(number=2)
    response = client.post(
        "/models/zh-serving/rollouts/",
        {
            "candidate": candidate.pk,
            "steps_preset": "quick",
            "threshold_max_error_rate": "0.02",
            "analysis_interval_seconds": "30",
        },
    )

    started = Rollout.objects.get(candidate=candidate)
    assert response.status_code == 302 and response["Location"] == f"/rollouts/{started.pk}/"
    assert started.status == Rollout.Status.PROGRESSING
    assert [step["bake_seconds"] for step in started.steps] == [60] * 5
    assert (started.thresholds["max_error_rate"], started.analysis_interval_seconds) == (0.02, 30)


def test_start_form_shows_service_refusals_and_changes_nothing(served_model, engineer):
    deploy_first(served_model, actor=engineer)
    candidate = served_model.versions.get(number=2)

    response = page_client_for(engineer).post(
        "/models/zh-serving/rollouts/",
        {
            "candidate": candidate.pk,
            "steps_preset": "default",
            "threshold_max_error_rate": "5",
        },
    )

    assert response.status_code == 400
    assert "threshold max_error_rate must be a number from 0.0 to 1.0" in response.content.decode()
    assert not Rollout.objects.filter(candidate=candidate).exists()


def test_second_active_rollout_is_refused_in_the_form(rollout, engineer, engineer2, reviewer):
    from tests.conftest import ModelVersionFactory, approve

    # A third approved version (the refusal comes before anything would load it).
    third = approve(
        ModelVersionFactory(model=rollout.model, created_by=engineer), submitter=engineer2, reviewer=reviewer
    )

    response = page_client_for(engineer).post(
        "/models/zh-serving/rollouts/", {"candidate": third.pk, "steps_preset": "default"}
    )

    assert response.status_code == 409
    assert f"rollout #{rollout.pk} is already active" in response.content.decode()
    assert Rollout.objects.filter(status__in=Rollout.ACTIVE_STATUSES).count() == 1


def test_reviewer_gets_no_start_form_and_cannot_post_one(served_model, reviewer):
    candidate = served_model.versions.get(number=1)
    client = page_client_for(reviewer)

    assert 'id="start-rollout"' not in client.get("/models/zh-serving/rollouts/").content.decode()
    response = client.post("/models/zh-serving/rollouts/", {"candidate": candidate.pk, "steps_preset": "default"})

    assert response.status_code == 403
    assert not Rollout.objects.exists()
    assert AuditEvent.objects.get(action="rollout.start").outcome == "denied"


def test_rollout_history_joins_the_dossier(rollout, engineer, manager):
    services.rollout_abort(actor=engineer, rollout=rollout, reason="not today")
    candidate = rollout.candidate

    data = page_client_for(manager).get(f"/models/zh-serving/versions/{candidate.number}/dossier.json").json()
    page = page_client_for(manager).get(f"/models/zh-serving/versions/{candidate.number}/dossier/").content.decode()

    [entry] = data["rollouts"]
    assert (entry["id"], entry["role"], entry["status"], entry["stable"]) == (rollout.pk, "candidate", "aborted", 1)
    assert (entry["steps_reached"], entry["steps_total"], entry["status_reason"]) == (1, 3, "not today")
    assert f'href="/rollouts/{rollout.pk}/"' in page and "not today" in page
    # v1 was the stable side of that rollout and the candidate of its own first deployment.
    stable_side = page_client_for(manager).get("/models/zh-serving/versions/1/dossier.json").json()["rollouts"]
    assert sorted(item["role"] for item in stable_side) == ["candidate", "stable"]


def test_dashboard_shows_active_rollouts(rollout, manager):
    html = page_client_for(manager).get("/dashboard/").content.decode()

    assert 'id="active-rollouts"' in html and f'href="/rollouts/{rollout.pk}/"' in html


def test_model_page_links_to_rollouts_and_monitoring(served_model, reviewer):
    html = page_client_for(reviewer).get("/models/zh-serving/").content.decode()

    assert 'href="/models/zh-serving/rollouts/"' in html and 'href="/models/zh-serving/monitoring/"' in html
