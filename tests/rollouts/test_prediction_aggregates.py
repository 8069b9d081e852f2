"""Per-minute prediction aggregates: what the log writer and feedback add
equals the raw rows' own sums (errors, labels, shadow answers, feedback,
the drift sketch), reads of unaligned windows take their partial minutes
from the raw rows, the backfill command rebuilds the same rows, and the
latency percentiles estimated from the histogram."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from rollouts import aggregation, selectors
from rollouts.drift import sketch_texts
from rollouts.models import PredictionAggregate, PredictionLog
from rollouts.prediction_log import LATENCY_BUCKETS_MS, PredictionLogWriter, new_entry
from rollouts.services import feedback_record
from tests.conftest import ModelVersionFactory

# A whole half-hour, so the half-hour rows are tested too.
T0 = datetime(2031, 5, 1, 9, 0, tzinfo=UTC)
TEXTS = ["好评 很好", "差评!", "", "物流慢 ,但 质量 不错", "ok 👍", "退货\n退款"]


def mixed_entries(version, *, count: int, route: str = "stable", shadow: bool = False, offset: int = 0):
    """Rows spread over 40 minutes (two half-hours): every seventh one an
    error, labels alternating, confidences and latencies across buckets."""
    rows = []
    for n in range(count):
        error = "RuntimeError: boom" if n % 7 == 3 else ""
        rows.append(
            new_entry(
                model_id=version.model_id,
                version_id=version.pk,
                rollout_id=None,
                route=route,
                shadow=shadow,
                text=TEXTS[(n + offset) % len(TEXTS)],
                key_digest="",
                label="" if error else ("positive", "negative")[n % 2],
                confidence=None if error else round(0.05 + (n % 19) * 0.05, 2),
                latency_ms=[0.4, 3.0, 7.5, 33.0, 120.0, 480.0, 2600.0, 12000.0][n % 8] + n / 1000,
                created_at=T0 + timedelta(seconds=17 * n + offset),
                error=error,
            )
        )
    return rows


def raw_tally(version, since, until) -> dict:
    """The sums of the raw rows of [since, until), computed here by hand."""
    rows = list(PredictionLog.objects.filter(version=version, created_at__gte=since, created_at__lt=until))
    answered = [row for row in rows if not row.error]
    latencies = [row.latency_ms for row in rows]
    feedback = [row.feedback for row in rows if hasattr(row, "feedback")]
    texts = [row.input_text for row in rows if row.input_text]
    return {
        "requests": len(rows),
        "errors": len(rows) - len(answered),
        "latency_buckets": [
            sum(1 for ms in latencies if low < ms <= high)
            for low, high in zip((-1.0, *LATENCY_BUCKETS_MS), (*LATENCY_BUCKETS_MS, float("inf")))
        ],
        "latency_ms_sum": sum(latencies),
        "latency_ms_min": min(latencies, default=None),
        "latency_ms_max": max(latencies, default=None),
        "labels": Counter(row.label for row in answered),
        "confidence_sum": sum(row.confidence for row in answered if row.confidence is not None),
        "confidence_count": sum(1 for row in answered if row.confidence is not None),
        "feedback": len(feedback),
        "correct": sum(1 for f in feedback if f.correct),
        "sketch": sketch_texts(texts),
    }


def assert_tally_equals_raw(tally: dict, raw: dict) -> None:
    for field in ("requests", "errors", "latency_buckets", "labels", "confidence_count", "feedback", "correct"):
        assert tally[field] == raw[field], field
    assert tally["latency_ms_sum"] == pytest.approx(raw["latency_ms_sum"])
    assert tally["confidence_sum"] == pytest.approx(raw["confidence_sum"])
    assert (tally["latency_ms_min"], tally["latency_ms_max"]) == (raw["latency_ms_min"], raw["latency_ms_max"])
    sketch = aggregation.tally_sketch(tally)
    assert sketch["texts"] == raw["sketch"]["texts"] and sketch["length_sum"] == raw["sketch"]["length_sum"]
    assert list(sketch["length_bins"]) == raw["sketch"]["length_bins"]
    assert dict(sketch["characters"]) == raw["sketch"]["characters"]
    assert tally["characters_total"] == sum(raw["sketch"]["characters"].values())


@pytest.fixture
def logged(engineer):
    """Two versions of one model through the real writer (three batches):
    live rows with errors, shadow answers of the second version, and feedback
    through the feedback service on some live answers."""
    version = ModelVersionFactory()
    candidate = ModelVersionFactory(model=version.model)
    writer = PredictionLogWriter(flush_seconds=0, batch_size=50, max_buffer=10_000)
    writer.enqueue(mixed_entries(version, count=140))
    writer.enqueue(mixed_entries(candidate, count=60, route="shadow", shadow=True, offset=5))
    assert writer.flush()
    answered = PredictionLog.objects.filter(version=version, error="").order_by("created_at")[:30]
    items = [
        {"prediction_id": str(row.prediction_id), "label": row.label if n % 3 else "negative"}
        for n, row in enumerate(answered)
    ]
    feedback_record(actor=engineer, model=version.model, items=items)
    return version, candidate


def test_written_aggregates_equal_the_raw_rows_of_each_minute_and_half_hour(logged):
    for version in logged:
        stored = PredictionAggregate.objects.filter(version=version)
        assert stored.filter(span_seconds=aggregation.MINUTE).exists()
        for row in stored:
            start = row.start
            raw = raw_tally(version, start, start + timedelta(seconds=row.span_seconds))
            assert_tally_equals_raw(aggregation.tally_of_row(row.__dict__), raw)
        total = raw_tally(version, T0 - timedelta(days=1), T0 + timedelta(days=1))
        for span in aggregation.SPANS:
            assert sum(row.requests for row in stored.filter(span_seconds=span)) == total["requests"]
            assert sum(row.feedback for row in stored.filter(span_seconds=span)) == total["feedback"]
    assert raw_tally(logged[0], T0, T0 + timedelta(hours=1))["feedback"] == 30


def test_an_unaligned_window_reads_its_partial_minutes_from_the_raw_rows(logged):
    version = logged[0]
    since, until = T0 + timedelta(seconds=95), T0 + timedelta(hours=1, seconds=13)
    # 9:01:35-9:02 raw, 9:02-9:30 minutes, 9:30-10:00 one half-hour, 10:00-10:00:13 raw.
    pieces = aggregation._cover(since, until)
    assert [span for span, _, _ in pieces] == [0, 60, 1800, 0]
    window = aggregation.aggregate_buckets(version.pk, since, until, until - since)[0]
    assert_tally_equals_raw(window, raw_tally(version, since, until))

    series = aggregation.aggregate_buckets(version.pk, since, until, timedelta(minutes=7))
    for index, tally in series.items():
        start = since + index * timedelta(minutes=7)
        assert_tally_equals_raw(tally, raw_tally(version, start, min(until, start + timedelta(minutes=7))))


def test_the_monitoring_numbers_come_from_the_aggregates(logged):
    version = logged[0]
    window = selectors.version_window(version=version, since=T0, until=T0 + timedelta(hours=1))
    raw = aggregation.raw_buckets_python(version.pk, T0, T0 + timedelta(hours=1), timedelta(hours=1), 0)[0]

    assert (window["requests"], window["errors"]) == (raw["requests"], raw["errors"]) == (140, 20)
    assert window["labels"] == dict(sorted(raw["labels"].items()))
    assert window["mean_confidence"] == pytest.approx(raw["confidence_sum"] / raw["confidence_n"])
    assert (window["feedback"], window["correct"]) == (raw["feedback"], raw["correct"])
    assert window["feedback"] == 30 and 0 < window["correct"] < 30
    # Percentiles from the histogram lie in the bucket of the exact value.
    for estimate, exact in zip((window["latency_p50"], window["latency_p95"], window["latency_p99"]), raw["latency"]):
        bucket = next((bound for bound in LATENCY_BUCKETS_MS if exact <= bound), float("inf"))
        below = max((bound for bound in LATENCY_BUCKETS_MS if bound < bucket), default=0.0)
        assert below <= estimate <= bucket, (estimate, exact)


def test_the_backfill_command_rebuilds_the_same_aggregates(logged):
    version, candidate = logged
    fields = ("version_id", "span_seconds", "start", *aggregation.STORED_FIELDS)
    written = sorted(PredictionAggregate.objects.values_list(*fields), key=lambda row: row[:3])
    PredictionAggregate.objects.all().delete()

    call_command("rebuild_prediction_aggregates", "--since", "2031-05-01", "--until", "2031-05-02")

    rebuilt = sorted(PredictionAggregate.objects.values_list(*fields), key=lambda row: row[:3])
    assert len(rebuilt) == len(written)
    for before, after in zip(written, rebuilt):
        assert before[:3] == after[:3]
        for name, a, b in zip(fields, before, after):
            assert a == pytest.approx(b) if isinstance(a, float) else a == b, name


def test_a_sketch_names_its_most_frequent_characters_and_counts_the_rest():
    tally = aggregation.new_tally()
    aggregation.add_row(tally, 1.0, "", "positive", 0.5, "aaab" + "".join(chr(0x4E00 + n) for n in range(1100)))
    aggregation.finish_characters(tally)
    aggregation.bound_characters(tally, aggregation.SKETCH_CHARACTERS[aggregation.MINUTE])

    assert len(tally["characters"]) == 1024 and tally["characters"]["a"] == 3
    assert tally["characters_total"] == 1104
    assert sum(tally["characters"].values()) + tally["characters_other"] == 1104


def test_histogram_percentiles_are_exact_for_one_latency_and_within_the_bucket_otherwise():
    single = aggregation.new_tally()
    for _ in range(5):
        aggregation.add_row(single, 42.0, "", "positive", 0.9, "")
    assert [aggregation.histogram_percentile(single, f) for f in (0.5, 0.95, 0.99)] == [42.0, 42.0, 42.0]

    spread = aggregation.new_tally()
    for ms in (10, 20, 30, 40, 50):
        aggregation.add_row(spread, float(ms), "", "positive", 0.9, "")
    # Rank 2.5 of 5 falls in (25, 50]: 25 + 25 * (2.5 - 2) / 3.
    assert aggregation.histogram_percentile(spread, 0.5) == pytest.approx(25 + 25 * 0.5 / 3)
    assert aggregation.histogram_percentile(aggregation.new_tally(), 0.5) is None


def test_placeholders_of_redacted_inputs_add_to_the_length_but_never_to_the_character_sketch():
    """Stored inputs are redacted (rollouts/redaction.py): a placeholder such
    as 〈手机号〉 must not read as new characters in the drift sketch, exactly
    as the reference profile leaves it out."""
    from rollouts.redaction import redact

    text = redact("电话13812345678，质量好")
    assert "〈手机号〉" in text
    tally = aggregation.new_tally()
    aggregation.add_row(tally, 5.0, "", "positive", 0.9, text)
    aggregation.finish_characters(tally)

    assert tally["text_length_sum"] == len(text)
    assert set(tally["characters"]) == set("电话，质量好")
    assert set(sketch_texts([text])["characters"]) == set("电话，质量好")
