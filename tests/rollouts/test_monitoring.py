"""Monitoring time series: the aggregation on known rows (counts,
percentiles, error rate, accuracy from feedback, read from the per-minute
aggregates; the raw-row binning on PostgreSQL and through the Python path the
SQLite demo uses), and drift on real served traffic."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from glassbox.errors import InvalidInput
from rollouts import aggregation, selectors
from rollouts.models import Feedback, PredictionLog
from rollouts.services import feedback_record
from tests.conftest import ModelVersionFactory
from tests.rollouts.rollout_helpers import chinese_reviews, english_texts, send_traffic

T0 = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


def _log(version, *, at, latency, label="positive", confidence=0.9, error="", text="好"):
    return PredictionLog(
        model=version.model,
        version=version,
        route="stable",
        input_text=text,
        input_length=len(text),
        label="" if error else label,
        confidence=None if error else confidence,
        latency_ms=latency,
        error=error,
        created_at=at,
    )


@pytest.fixture
def known_rows(engineer):
    """Known rows of one version over three one-minute buckets (the middle one
    empty), rows just outside the window, and another version's rows."""
    version = ModelVersionFactory()
    other = ModelVersionFactory(model=version.model)
    rows = [
        _log(version, at=T0 + timedelta(seconds=1), latency=10, label="positive", confidence=0.9),
        _log(version, at=T0 + timedelta(seconds=2), latency=20, label="positive", confidence=0.8),
        _log(version, at=T0 + timedelta(seconds=3), latency=30, label="negative", confidence=0.7),
        _log(version, at=T0 + timedelta(seconds=4), latency=40, label="positive", confidence=0.6),
        _log(version, at=T0 + timedelta(seconds=59), latency=50, error="ValueError: boom"),
        _log(version, at=T0 + timedelta(seconds=120), latency=100, label="negative", confidence=0.5),
        _log(version, at=T0 + timedelta(seconds=179), latency=200, label="negative", confidence=0.7),
        _log(version, at=T0 - timedelta(seconds=1), latency=999, label="positive"),  # before the window
        _log(version, at=T0 + timedelta(seconds=180), latency=999, label="positive"),  # at its end: excluded
        _log(other, at=T0 + timedelta(seconds=5), latency=999, label="positive"),
    ]
    PredictionLog.objects.bulk_create(rows)
    logged = {row.latency_ms: row for row in PredictionLog.objects.filter(version=version)}
    # Feedback on three answers of the first bucket: two right, one wrong.
    for latency, true_label in ((10, "positive"), (20, "negative"), (30, "negative")):
        row = logged[latency]
        Feedback.objects.create(prediction=row, label=true_label, correct=row.label == true_label, created_by=engineer)
    # Rows written around the log writer: their aggregates come from the backfill.
    aggregation.rebuild_aggregates(since=T0 - timedelta(minutes=1), until=T0 + timedelta(minutes=4))
    return version


def test_timeseries_counts_percentiles_error_rate_and_accuracy_on_known_rows(known_rows):
    series = selectors.version_timeseries(
        version=known_rows, since=T0, until=T0 + timedelta(seconds=180), bucket_seconds=60
    )

    assert [b["start"] for b in series] == [T0, T0 + timedelta(seconds=60), T0 + timedelta(seconds=120)]
    first, empty, last = series
    assert (first["requests"], first["errors"], first["error_rate"]) == (5, 1, 0.2)
    # From the histogram (exact: 30, 48, 49.6): 1 call up to 10 ms, 1 in (10, 25], 3 in (25, 50];
    # the ranks 2.5, 4.75 and 4.95 of 5 interpolate in (25, 50].
    assert first["latency_p50"] == pytest.approx(25 + 25 * 0.5 / 3)
    assert first["latency_p95"] == pytest.approx(25 + 25 * 2.75 / 3)
    assert first["latency_p99"] == pytest.approx(25 + 25 * 2.95 / 3)
    assert first["labels"] == {"negative": 1, "positive": 3}
    assert first["mean_confidence"] == pytest.approx(0.75)
    assert (first["feedback"], first["correct"]) == (3, 2)
    assert first["live_accuracy"] == pytest.approx(2 / 3)
    assert empty["requests"] == 0 and empty["error_rate"] is None and empty["latency_p95"] is None
    assert empty["live_accuracy"] is None and empty["labels"] == {}
    assert (last["requests"], last["errors"], last["labels"]) == (2, 0, {"negative": 2})
    # 100 and 200 ms (exact: 150, 195, 199): (50, 100] narrowed to the minimum 100, (100, 250] to the maximum 200.
    assert (last["latency_p50"], last["latency_p95"], last["latency_p99"]) == pytest.approx((100.0, 190.0, 198.0))
    # No reference dataset: drift is not measured rather than shown as zero.
    assert all(bucket["drift"] is None for bucket in series)


def test_python_path_of_the_sqlite_demo_agrees_with_postgresql(known_rows):
    stride = timedelta(seconds=60)
    until = T0 + timedelta(seconds=180)

    in_sql = aggregation.raw_buckets_postgresql(known_rows.pk, T0, until, stride, 10)
    in_python = aggregation.raw_buckets_python(known_rows.pk, T0, until, stride, 10)

    assert set(in_sql) == set(in_python) == {0, 2}
    for index in in_sql:
        sql, python = in_sql[index], in_python[index]
        for key in ("requests", "errors", "confidence_n", "feedback", "correct", "labels"):
            assert sql[key] == python[key], (index, key)
        assert sql["latency"] == pytest.approx(python["latency"])
        assert sql["confidence_sum"] == pytest.approx(python["confidence_sum"])
        assert sorted(sql["texts"]) == sorted(python["texts"])


def test_window_totals_equal_one_bucket_over_the_window(known_rows):
    window = selectors.version_window(version=known_rows, since=T0, until=T0 + timedelta(seconds=180))

    assert (window["requests"], window["errors"], window["feedback"], window["correct"]) == (7, 1, 3, 2)
    assert window["labels"] == {"negative": 3, "positive": 3}
    assert window["latency_p50"] == pytest.approx(25 + 25 * 1.5 / 3)  # exact: 40; rank 3.5 of 7 in (25, 50]


def test_timeseries_refuses_an_empty_or_inverted_range(known_rows):
    with pytest.raises(InvalidInput):
        selectors.version_timeseries(version=known_rows, since=T0, until=T0, bucket_seconds=60)
    with pytest.raises(InvalidInput):
        selectors.version_timeseries(version=known_rows, since=T0, until=T0 + timedelta(hours=1), bucket_seconds=0)


def test_served_traffic_is_counted_with_confidence_and_live_accuracy(referenced_model, engineer):
    since = timezone.now()
    answers = send_traffic(referenced_model, chinese_reviews(40), actor=engineer)
    # Feedback: the first 30 answers, ten of them contradicted.
    items = [{"prediction_id": a["prediction_id"], "label": a["label"]} for a in answers[:20]]
    flipped = {"positive": "negative", "negative": "positive"}
    items += [{"prediction_id": a["prediction_id"], "label": flipped[a["label"]]} for a in answers[20:30]]
    feedback_record(actor=engineer, model=referenced_model, items=items)

    version = referenced_model.versions.get(number=1)
    window = selectors.version_window(version=version, since=since, until=timezone.now() + timedelta(seconds=1))

    assert window["requests"] == 40 and window["errors"] == 0
    assert sum(window["labels"].values()) == 40
    assert window["mean_confidence"] == pytest.approx(sum(a["confidence"] for a in answers) / 40)
    assert (window["feedback"], window["correct"]) == (30, 20)
    assert window["live_accuracy"] == pytest.approx(20 / 30)
    assert 0 < window["latency_p50"] <= window["latency_p95"] <= window["latency_p99"]


def test_english_traffic_shows_drift_against_the_chinese_reference(referenced_model, engineer, settings):
    version = referenced_model.versions.get(number=1)
    limit = settings.GLASSBOX_DRIFT_THRESHOLDS["character_js_distance"]

    in_domain_since = timezone.now()
    send_traffic(referenced_model, chinese_reviews(200), actor=engineer)
    english_since = timezone.now()
    send_traffic(referenced_model, english_texts(200), actor=engineer)
    until = timezone.now() + timedelta(seconds=1)

    in_domain = selectors.version_window(version=version, since=in_domain_since, until=english_since)["drift"]
    english = selectors.version_window(version=version, since=english_since, until=until)["drift"]

    assert in_domain["texts"] == english["texts"] == 200
    assert english["character_js_distance"] > 0.9
    assert english["character_js_excess"] > limit
    # In-domain reviews differ from a 200-text reference by sampling, which the excess discounts.
    assert in_domain["character_js_distance"] > in_domain["character_js_excess"]
    assert in_domain["character_js_excess"] < limit
    # The time series carries the same signal per bucket.
    series = selectors.version_timeseries(version=version, since=english_since, until=until, bucket_seconds=3600)
    assert series[0]["drift"]["character_js_excess"] > limit
