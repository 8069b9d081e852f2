"""The monitoring page of a model: server-rendered SVG charts with every
label escaped, a window selector, open alerts, and permissions."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from rollouts import aggregation, selectors, services
from rollouts.models import PredictionLog
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, page_client_for
from tests.rollouts.rollout_helpers import chinese_reviews, deploy, english_texts, send_traffic

SCRIPT_LABEL = '<script>alert("label")</script>'


@pytest.fixture
def hostile_labels(engineer):
    """A version whose labels carry markup (labels come from uploaded models),
    with a few logged answers in the last hour."""
    model = RegisteredModelFactory(name="hostile", created_by=engineer, description=SCRIPT_LABEL)
    version = ModelVersionFactory(model=model, labels=[SCRIPT_LABEL, "fine"])
    now = timezone.now()
    PredictionLog.objects.bulk_create(
        [
            PredictionLog(
                model=model,
                version=version,
                route="stable",
                label=label,
                confidence=0.8,
                latency_ms=5.0,
                input_text="好",
                input_length=1,
                created_at=now - timedelta(minutes=minutes),
            )
            for minutes, label in ((1, SCRIPT_LABEL), (2, SCRIPT_LABEL), (3, "fine"))
        ]
    )
    # Rows written around the log writer: their aggregates come from the backfill.
    aggregation.rebuild_aggregates(since=now - timedelta(minutes=5), until=now + timedelta(minutes=1))
    return model


def test_charts_render_as_svg_with_escaped_labels(hostile_labels, reviewer):
    response = page_client_for(reviewer).get("/models/hostile/monitoring/?window=1h")

    html = response.content.decode()
    assert response.status_code == 200
    assert SCRIPT_LABEL not in html
    assert "&lt;script&gt;alert(&quot;label&quot;)&lt;/script&gt;" in html
    assert html.count("<svg ") == 8  # requests, errors, latency, confidence, accuracy, 2 x drift, labels
    assert re.search(
        r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="[\d.]+" fill="#[0-9A-F]{6}"><title>&lt;script', html
    )
    assert "<polyline" in html


def test_window_selector_picks_the_bucket_size(hostile_labels, reviewer):
    client = page_client_for(reviewer)

    hour = client.get("/models/hostile/monitoring/?window=1h").content.decode()
    week = client.get("/models/hostile/monitoring/?window=7d").content.decode()
    unknown = client.get("/models/hostile/monitoring/?window=forever")

    assert "buckets of 60 s" in hour and '<option value="1h" selected>' in hour
    assert "buckets of 10800 s" in week and '<option value="7d" selected>' in week
    assert unknown.status_code == 200 and '<option value="24h" selected>' in unknown.content.decode()


def test_window_bounds_are_aligned_to_buckets():
    name, since, until, bucket = selectors.window_bounds("1h", now=timezone.now())

    assert (name, bucket, until - since) == ("1h", 60, timedelta(hours=1))
    assert until.timestamp() % 60 == 0


def test_monitoring_page_refuses_outsiders_and_writes(hostile_labels, outsider, engineer):
    assert page_client_for(outsider).get("/models/hostile/monitoring/").status_code == 403
    assert page_client_for(engineer).get("/models/nothing-here/monitoring/").status_code == 404
    assert page_client_for(engineer).post("/models/hostile/monitoring/").status_code == 405


def test_served_traffic_and_open_alerts_show_on_the_page(served_model, engineer, manager, demo_models, serving_env):
    from tests.rollouts.rollout_helpers import upload_dataset

    version = served_model.versions.get(number=1)
    dataset = upload_dataset(uploader=engineer, path=demo_models["holdout_csv"])
    services.version_reference_set(actor=engineer, version=version, dataset=dataset)
    deploy(served_model, version, actor=engineer)
    send_traffic(served_model, chinese_reviews(20) + english_texts(200), actor=engineer)
    raised = services.monitor_check(now=timezone.now() + timedelta(seconds=1))
    assert raised

    html = page_client_for(manager).get("/models/zh-serving/monitoring/?window=1h").content.decode()

    panel = html.split('id="version-1"', 1)[1]
    assert "<td>220</td><td>0</td>" in panel  # requests, errors of the window
    assert "character_js_distance" in panel and "out of bounds" in panel
    assert html.count('<tr class="alert-open">') == len(raised)
    dashboard = page_client_for(manager).get("/dashboard/").content.decode()
    assert dashboard.count('<tr class="alert-open">') == len(raised)
