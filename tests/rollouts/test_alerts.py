"""Alerts of the live monitor: raised once when a deployed version's traffic
leaves its bounds, never duplicated while open, cleared when the traffic is
healthy again; each move on the audit trail with the platform as actor."""

from datetime import timedelta

import pytest
from django.utils import timezone

from governance.audit_integrity import verify_chain
from governance.models import AuditEvent
from rollouts import services
from rollouts.models import Alert
from rollouts.tasks import check_monitors
from tests.conftest import wait_for
from tests.rollouts.rollout_helpers import chinese_reviews, deploy, english_texts, send_traffic, upload_dataset


def test_drift_raises_one_alert_per_metric_and_records_it(referenced_model, engineer, settings):
    send_traffic(referenced_model, english_texts(200), actor=engineer)
    now = timezone.now() + timedelta(seconds=1)

    raised = services.monitor_check(now=now)

    version = referenced_model.versions.get(number=1)
    metrics = {alert.metric for alert in raised}
    assert "character_js_distance" in metrics
    assert {"error_rate", "latency_p95_ms"}.isdisjoint(metrics)  # served fine, only the inputs moved
    alert = Alert.objects.get(version=version, metric="character_js_distance", cleared_at__isnull=True)
    assert alert.value > alert.threshold == settings.GLASSBOX_DRIFT_THRESHOLDS["character_js_distance"]
    assert "expected by sampling" in alert.message
    events = AuditEvent.objects.filter(action="monitor.alert_raised")
    assert events.count() == len(raised)
    event = events.get(object_id=str(alert.pk))
    assert (event.actor_id, event.actor_username, event.model_name, event.version_number) == (None, "", "zh-serving", 1)
    assert event.detail["metric"] == "character_js_distance" and event.detail["window"]["requests"] == 200
    assert verify_chain()[1] is None


def test_an_open_alert_is_not_raised_again(referenced_model, engineer):
    send_traffic(referenced_model, english_texts(200), actor=engineer)
    now = timezone.now() + timedelta(seconds=1)
    first = services.monitor_check(now=now)
    events_before = AuditEvent.objects.count()

    again = services.monitor_check(now=now + timedelta(seconds=10))

    assert first and again == []
    assert Alert.objects.count() == len(first)
    assert AuditEvent.objects.count() == events_before


def test_alert_clears_when_traffic_is_back_in_bounds(referenced_model, engineer, settings):
    send_traffic(referenced_model, english_texts(200), actor=engineer)
    healthy_since = timezone.now()
    raised = services.monitor_check(now=healthy_since)
    assert raised
    send_traffic(referenced_model, chinese_reviews(200), actor=engineer)

    # A window that holds only the in-domain traffic.
    cleared = services.monitor_check(now=healthy_since + timedelta(seconds=settings.GLASSBOX_MONITOR_INTERVAL_SECONDS))

    assert {alert.pk for alert in cleared} == {alert.pk for alert in raised}
    assert not Alert.objects.filter(cleared_at__isnull=True).exists()
    events = AuditEvent.objects.filter(action="monitor.alert_cleared")
    assert sorted(int(pk) for pk in events.values_list("object_id", flat=True)) == sorted(a.pk for a in raised)
    assert all(event.actor_id is None and event.detail["breached"] is False for event in events)
    assert verify_chain()[1] is None


def test_too_little_traffic_is_not_judged(referenced_model, engineer):
    send_traffic(referenced_model, english_texts(10), actor=engineer)  # under min_requests and min_drift_texts

    assert services.monitor_check(now=timezone.now() + timedelta(seconds=1)) == []
    assert not Alert.objects.exists()


def test_live_accuracy_from_feedback_raises_an_alert(referenced_model, engineer, settings):
    settings.GLASSBOX_MONITOR_THRESHOLDS = {**settings.GLASSBOX_MONITOR_THRESHOLDS, "min_live_accuracy": 0.5}
    answers = send_traffic(referenced_model, chinese_reviews(40), actor=engineer)
    flipped = {"positive": "negative", "negative": "positive"}
    # Every labelled answer turns out wrong.
    services.feedback_record(
        actor=engineer,
        model=referenced_model,
        items=[{"prediction_id": a["prediction_id"], "label": flipped[a["label"]]} for a in answers[:25]],
    )

    raised = services.monitor_check(now=timezone.now() + timedelta(seconds=1))

    accuracy = [alert for alert in raised if alert.metric == "live_accuracy"]
    assert len(accuracy) == 1
    assert (accuracy[0].value, accuracy[0].threshold) == (0.0, 0.5)
    assert "below the minimum" in accuracy[0].message


def _finished_ticks(log: str) -> int:
    return sum(1 for line in log.splitlines() if "rollouts.tasks.check_monitors[" in line and " succeeded " in line)


@pytest.mark.worker
def test_beat_task_raises_alerts_in_a_real_worker(
    committed_db, served_model, engineer, demo_models, settings, worker_process
):
    from rollouts import prediction_log, routing, services

    assert settings.CELERY_BEAT_SCHEDULE["rollouts-check-monitors"]["task"] == check_monitors.name
    settings.GLASSBOX_PREDICTION_LOG_FLUSH_SECONDS = 0
    prediction_log.reset_writer()
    routing.clear_routing_cache()
    try:
        dataset = upload_dataset(uploader=engineer, path=demo_models["holdout_csv"])
        version = served_model.versions.get(number=1)
        services.version_reference_set(actor=engineer, version=version, dataset=dataset)
        deploy(served_model, version, actor=engineer)
        send_traffic(served_model, english_texts(200), actor=engineer)

        check_monitors.delay()

        alert = wait_for(
            lambda: Alert.objects.filter(version=version, metric="character_js_distance").first(),
            timeout=60,
            what="the drift alert",
        )
        assert AuditEvent.objects.filter(action="monitor.alert_raised", object_id=str(alert.pk), actor_id=None).exists()
        # A re-delivered tick changes nothing: still one open alert per metric.
        check_monitors.delay()
        wait_for(lambda: _finished_ticks(worker_process()) >= 2, timeout=60, what="the second tick")
        assert Alert.objects.filter(version=version, metric="character_js_distance").count() == 1
    finally:
        prediction_log.reset_writer()
        routing.clear_routing_cache()
