"""GET /metrics: Prometheus text format with serving counters, latency
histograms, rollout and alert gauges; for signed-in roles or a scraper token."""

import re

import pytest
from django.test import Client
from django.utils import timezone

from rollouts.models import Alert
from rollouts.prediction_log import flush_prediction_logs
from tests.conftest import UserFactory, api_client_for, page_client_for
from tests.rollouts.rollout_helpers import deploy, start_canary

# The text exposition format, strictly: "# HELP name text", "# TYPE name kind",
# and samples "name{label="value",...} number".
LINE_HELP = re.compile(r"^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$")
LINE_TYPE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$")
LINE_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, dict, float]]]:
    """Families and samples; fails on any line outside the format, and on a
    sample whose family was not declared before it."""
    assert text.endswith("\n")
    kinds: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if match := LINE_HELP.match(line):
            continue
        if match := LINE_TYPE.match(line):
            assert match[1] not in kinds, f"family declared twice: {match[1]}"
            kinds[match[1]] = match[2]
            continue
        match = LINE_SAMPLE.match(line)
        assert match, f"not a valid exposition line: {line!r}"
        name, value = match[1], float(match[3])
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in kinds else name
        assert family in kinds, f"sample before its TYPE: {line!r}"
        samples.append((name, dict(LABEL.findall(match[2] or "")), value))
    return kinds, samples


def metrics(client_or_user, **headers):
    client = client_or_user if isinstance(client_or_user, Client) else api_client_for(client_or_user)
    return client.get("/metrics", **headers)


@pytest.fixture
def traffic(served_model, engineer, serving_env):
    deploy(served_model, served_model.versions.get(number=1), actor=engineer)
    api = api_client_for(engineer)
    for n in range(6):
        api.post(
            "/api/v1/models/zh-serving/predict/", {"inputs": ["质量很好", "太差了"], "key": f"u{n}"}, format="json"
        )
    api.post("/api/v1/models/zh-serving/predict/", {"inputs": ["好"]}, format="json", HTTP_X_GLASSBOX_VERSION="2")
    assert flush_prediction_logs()
    return served_model


def test_counters_and_histograms_parse_and_match_the_traffic(traffic, manager):
    response = metrics(manager)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    kinds, samples = parse(response.content.decode())
    assert kinds["glassbox_predictions_total"] == "counter"
    assert kinds["glassbox_prediction_latency_seconds"] == "histogram"

    def value(name, **labels):
        found = [v for n, lbl, v in samples if n == name and all(lbl.get(k) == str(x) for k, x in labels.items())]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    assert value("glassbox_predictions_total", model="zh-serving", version=1, route="stable") == 12
    assert value("glassbox_predictions_total", model="zh-serving", version=2, route="pinned") == 1
    assert value("glassbox_prediction_errors_total", model="zh-serving", version=1, route="stable") == 0
    series = {"model": "zh-serving", "version": 1, "route": "stable"}
    buckets = [
        (float(lbl["le"]), v)
        for n, lbl, v in samples
        if n == "glassbox_prediction_latency_seconds_bucket" and lbl["version"] == "1"
    ]
    assert [le for le, _ in buckets] == sorted(le for le, _ in buckets) and buckets[-1][0] == float("inf")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert buckets[-1][1] == value("glassbox_prediction_latency_seconds_count", **series) == 12
    assert value("glassbox_prediction_latency_seconds_sum", **series) > 0


def test_rollout_and_alert_gauges(traffic, engineer):
    _, v2 = traffic.versions.order_by("number")
    rollout = start_canary(traffic, v2, actor=engineer, weight=25)
    Alert.objects.create(
        model=traffic,
        version=v2,
        metric="error_rate",
        value=0.2,
        threshold=0.05,
        message="error rate 20% over 5%",
        raised_at=timezone.now(),
    )
    _, samples = parse(metrics(engineer).content.decode())
    assert (
        "glassbox_rollout_candidate_weight",
        {"model": "zh-serving", "rollout": str(rollout.pk), "candidate": "2"},
        25.0,
    ) in samples
    assert (
        "glassbox_rollout_status",
        {"model": "zh-serving", "rollout": str(rollout.pk), "status": "progressing"},
        1.0,
    ) in samples
    assert ("glassbox_alerts_open", {"model": "zh-serving", "version": "2", "metric": "error_rate"}, 1.0) in samples


def test_another_teams_engineer_sees_no_series_of_the_model_and_a_scraper_sees_them_all(traffic, settings):
    other = UserFactory(username="otto", role="engineer", team=("payments", "engineer"))
    settings.GLASSBOX_METRICS_TOKEN = "scrape-me"

    _, theirs = parse(metrics(other).content.decode())
    _, scraped = parse(metrics(Client(), HTTP_AUTHORIZATION="Bearer scrape-me").content.decode())

    assert not [sample for sample in theirs if sample[1].get("model") == "zh-serving"]  # not even its name
    assert [sample for sample in scraped if sample[0] == "glassbox_predictions_total"][0][1]["model"] == "zh-serving"


def test_label_values_are_escaped():
    from prometheus_client.core import CounterMetricFamily

    from rollouts.metrics import render

    family = CounterMetricFamily("x_total", "a help\nline", labels=["model"])
    family.add_metric(['we"ird\\name\nx'], 1)
    _, samples = parse(render([family]))
    assert samples == [("x_total", {"model": 'we\\"ird\\\\name\\nx'}, 1.0)]


def test_anonymous_scrapes_are_refused(db):
    response = Client().get("/metrics")
    assert response.status_code == 401 and response.json()["detail"]


def test_users_without_a_role_are_refused(outsider):
    response = metrics(outsider)
    assert response.status_code == 403 and response.json()["detail"]


def test_a_signed_in_browser_session_may_read(manager):
    client = page_client_for(manager)
    assert metrics(client).status_code == 200


def test_a_scraper_with_the_metrics_token_may_read(db, settings):
    settings.GLASSBOX_METRICS_TOKEN = "scrape-secret-0123456789"
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-0123456789").status_code == 200
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401


def test_no_token_configured_means_no_bearer_access(db, settings):
    settings.GLASSBOX_METRICS_TOKEN = ""
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_metrics_is_read_only(manager):
    client = page_client_for(manager)
    assert client.post("/metrics").status_code == 405
