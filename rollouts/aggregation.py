"""Prediction logs of one version summed into time buckets: requests,
errors, latency percentiles, predicted labels, confidence, feedback and the
drift sketch of the input texts.

Two ways to the same sums:

- Aggregates (what the monitoring pages and the monitor read): the log
  writer adds each batch to PredictionAggregate rows of its minutes and
  half-hours in the batch's own transaction (`apply_tallies`), feedback adds
  to the rows of the minute of the prediction it labels, and a read
  (`aggregate_buckets`) sums the rows that fit the buckets, reading raw rows
  only for the part of a bucket that is not whole minutes (an unaligned
  window's first and last seconds). Latency percentiles are then estimated
  from the histogram (`histogram_percentile`); the rest is exact.
- Raw rows (`raw_buckets`): the exact bins of the log table, the way
  monitoring read before the aggregates. Kept as the reference the tests and
  bench/prediction_data.py compare with, and for `rebuild_aggregates`.

PostgreSQL does the raw counting and the percentiles (`date_bin`,
`percentile_cont`); other databases (the SQLite demo) get the same numbers
from a Python pass over the rows. Percentiles interpolate linearly between
ranks, as `percentile_cont` does (`percentile`, which the rollout analysis
uses too). Aggregates are read and merged in Python on every database.
"""

from __future__ import annotations

import bisect
import functools
import math
import operator
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q

from rollouts.drift import LENGTH_BINS, counted_characters
from rollouts.models import Feedback, PredictionLog
from rollouts.prediction_log import LATENCY_BUCKETS_MS

PERCENTILES = (0.5, 0.95, 0.99)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks: PostgreSQL's percentile_cont."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def empty_bucket() -> dict:
    return {
        "requests": 0,
        "errors": 0,
        "latency": [None, None, None],
        "confidence_sum": 0.0,
        "confidence_n": 0,
        "labels": Counter(),
        "feedback": 0,
        "correct": 0,
        "texts": [],
    }


# --- aggregation: PostgreSQL ---------------------------------------------------------


def raw_buckets_postgresql(
    version_id: int, since: datetime, until: datetime, stride: timedelta, text_sample: int
) -> dict[int, dict]:
    log_table = PredictionLog._meta.db_table
    feedback_table = Feedback._meta.db_table
    where = "version_id = %s AND created_at >= %s AND created_at < %s"
    bucket = "date_bin(%s::interval, created_at, %s::timestamptz)"
    # Parameter order: the bucket expression's two, then the WHERE clause's three.
    params = [stride, since, version_id, since, until]
    buckets: dict[int, dict] = defaultdict(empty_bucket)

    def index(start: datetime) -> int:
        return int((start - since) / stride)

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {bucket} AS b, count(*), count(*) FILTER (WHERE error <> ''),"
            " percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms),"
            " sum(confidence) FILTER (WHERE error = '' AND confidence IS NOT NULL),"
            " count(confidence) FILTER (WHERE error = '')"
            f" FROM {log_table} WHERE {where} GROUP BY b",
            params,
        )
        for start, requests, errors, latency, confidence_sum, confidence_n in cursor.fetchall():
            entry = buckets[index(start)]
            entry.update(
                requests=requests,
                errors=errors,
                latency=list(latency),
                confidence_sum=confidence_sum or 0.0,
                confidence_n=confidence_n,
            )
        cursor.execute(
            f"SELECT {bucket} AS b, label, count(*) FROM {log_table} WHERE {where} AND error = '' GROUP BY b, label",
            params,
        )
        for start, label, count in cursor.fetchall():
            buckets[index(start)]["labels"][label] = count
        cursor.execute(
            f"SELECT date_bin(%s::interval, p.created_at, %s::timestamptz) AS b, count(*), count(*) FILTER (WHERE f.correct)"
            f" FROM {log_table} p JOIN {feedback_table} f ON f.prediction_id = p.id"
            " WHERE p.version_id = %s AND p.created_at >= %s AND p.created_at < %s GROUP BY b",
            params,
        )
        for start, feedback, correct in cursor.fetchall():
            buckets[index(start)].update(feedback=feedback, correct=correct)
        if text_sample:
            # The newest texts of each bucket, at most text_sample of them.
            cursor.execute(
                f"SELECT b, input_text FROM (SELECT {bucket} AS b, input_text,"
                f" row_number() OVER (PARTITION BY {bucket} ORDER BY id DESC) AS n"
                f" FROM {log_table} WHERE {where} AND input_text <> '') sample WHERE n <= %s",
                [stride, since, stride, since, version_id, since, until, text_sample],
            )
            for start, text in cursor.fetchall():
                buckets[index(start)]["texts"].append(text)
    return buckets


# --- aggregation: any database (the SQLite demo) -------------------------------------


def raw_buckets_python(
    version_id: int, since: datetime, until: datetime, stride: timedelta, text_sample: int
) -> dict[int, dict]:
    rows = (
        PredictionLog.objects.filter(version_id=version_id, created_at__gte=since, created_at__lt=until)
        .order_by("-id")
        .values_list("created_at", "latency_ms", "error", "label", "confidence", "input_text", "feedback__correct")
    )
    buckets: dict[int, dict] = defaultdict(empty_bucket)
    latencies: dict[int, list[float]] = defaultdict(list)
    for created_at, latency_ms, error, label, confidence, input_text, correct in rows.iterator(chunk_size=2000):
        key = int((created_at - since) / stride)
        entry = buckets[key]
        entry["requests"] += 1
        latencies[key].append(latency_ms)
        if error:
            entry["errors"] += 1
        else:
            entry["labels"][label] += 1
            if confidence is not None:
                entry["confidence_sum"] += confidence
                entry["confidence_n"] += 1
        if correct is not None:
            entry["feedback"] += 1
            entry["correct"] += int(correct)
        if input_text and len(entry["texts"]) < text_sample:
            entry["texts"].append(input_text)
    for key, values in latencies.items():
        values.sort()
        buckets[key]["latency"] = [percentile(values, fraction) for fraction in PERCENTILES]
    return buckets


def raw_buckets(version_id: int, since: datetime, until: datetime, stride: timedelta, text_sample: int):
    """Bucket index (0 = the one starting at `since`) -> its sums; empty buckets are absent."""
    if connection.vendor == "postgresql":
        return raw_buckets_postgresql(version_id, since, until, stride, text_sample)
    return raw_buckets_python(version_id, since, until, stride, text_sample)


# --- aggregates: what the log writer and feedback add, what monitoring reads ------------

# The periods summed: minutes (the 1-hour page, the monitor's window) and
# half-hours (the 24-hour and 7-day pages: 48 and 336 rows per version).
MINUTE = 60
HALF_HOUR = 1800
SPANS = (MINUTE, HALF_HOUR)
# Characters a row's drift sketch names, most frequent first; the rest of the
# period's characters are only counted (`characters_other`) and left out of
# drift. Truncation is not neutral: the named head then looks
# over-represented against the reference. With 256 / 1024, in-domain traffic
# of bench/prediction_data.py at 1 M rows (about 2,500 distinct characters)
# read a JS distance of 0.244 against 0.192 from 2,000 raw texts. These bounds
# keep a half-hour of such traffic whole; a busier minute still loses its tail.
SKETCH_CHARACTERS = {MINUTE: 1024, HALF_HOUR: 4096}
CONFIDENCE_BINS = 10
_SUM_FIELDS = (
    "requests",
    "errors",
    "latency_ms_sum",
    "confidence_sum",
    "confidence_count",
    "feedback",
    "correct",
    "texts",
    "text_length_sum",
    "characters_total",
    "characters_other",
)
_LIST_FIELDS = {
    "latency_buckets": len(LATENCY_BUCKETS_MS) + 1,
    "confidence_buckets": CONFIDENCE_BINS,
    "length_bins": len(LENGTH_BINS) + 1,
}
_COUNTER_FIELDS = ("labels", "characters")
STORED_FIELDS = (*_SUM_FIELDS, *_LIST_FIELDS, *_COUNTER_FIELDS, "latency_ms_min", "latency_ms_max")


def new_tally() -> dict:
    tally: dict = {field: 0 for field in _SUM_FIELDS}
    tally["latency_ms_sum"] = tally["confidence_sum"] = 0.0
    tally.update({field: [0] * size for field, size in _LIST_FIELDS.items()})
    tally.update({field: Counter() for field in _COUNTER_FIELDS})
    tally["latency_ms_min"] = tally["latency_ms_max"] = None
    return tally


def add_row(tally: dict, latency_ms: float, error: str, label: str, confidence: float | None, text: str) -> None:
    """One logged prediction into a tally (whitespace characters are removed
    by `finish_characters`, once per tally rather than once per row)."""
    tally["requests"] += 1
    tally["latency_buckets"][bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
    tally["latency_ms_sum"] += latency_ms
    low, high = tally["latency_ms_min"], tally["latency_ms_max"]
    tally["latency_ms_min"] = latency_ms if low is None or latency_ms < low else low
    tally["latency_ms_max"] = latency_ms if high is None or latency_ms > high else high
    if error:
        tally["errors"] += 1
    else:
        tally["labels"][label] += 1
        if confidence is not None:
            tally["confidence_sum"] += confidence
            tally["confidence_count"] += 1
            tally["confidence_buckets"][min(CONFIDENCE_BINS - 1, max(0, int(confidence * CONFIDENCE_BINS)))] += 1
    if text:
        tally["texts"] += 1
        tally["text_length_sum"] += len(text)
        tally["length_bins"][bisect.bisect_left(LENGTH_BINS, len(text))] += 1
        tally["characters"].update(counted_characters(text))


def finish_characters(tally: dict) -> None:
    """Drop whitespace from a tally built by add_row and count what is left."""
    characters = tally["characters"]
    for ch in [ch for ch in characters if ch.isspace()]:
        del characters[ch]
    tally["characters_total"] += sum(characters.values())


def merge(into: dict, other: dict) -> dict:
    for field in _SUM_FIELDS:
        into[field] += other[field]
    for field in _LIST_FIELDS:
        into[field] = [a + b for a, b in zip(into[field], other[field])]
    for field in _COUNTER_FIELDS:
        into[field].update(other[field])
    for field, pick in (("latency_ms_min", min), ("latency_ms_max", max)):
        values = [v for v in (into[field], other[field]) if v is not None]
        into[field] = pick(values) if values else None
    return into


def bound_characters(tally: dict, limit: int) -> None:
    """Keep the `limit` most frequent characters by name, count the rest."""
    characters = tally["characters"]
    if len(characters) > limit:
        kept = Counter(dict(characters.most_common(limit)))
        tally["characters_other"] += sum(characters.values()) - sum(kept.values())
        tally["characters"] = kept


def tally_of_row(values: dict) -> dict:
    """A stored aggregate (a `.values()` dict or a model instance's fields) as a tally."""
    tally = new_tally()
    for field in _SUM_FIELDS:
        tally[field] = values.get(field) or tally[field]
    for field, size in _LIST_FIELDS.items():
        stored = values.get(field) or []
        tally[field] = list(stored) + [0] * (size - len(stored))
    for field in _COUNTER_FIELDS:
        tally[field] = Counter(values.get(field) or {})
    tally["latency_ms_min"] = values.get("latency_ms_min")
    tally["latency_ms_max"] = values.get("latency_ms_max")
    return tally


def _stored(tally: dict) -> dict:
    stored = {field: tally[field] for field in STORED_FIELDS}
    stored["labels"] = dict(tally["labels"])
    stored["characters"] = dict(tally["characters"])
    return stored


def period_start(moment: datetime, span: int) -> datetime:
    seconds = moment.timestamp()
    return datetime.fromtimestamp(seconds - seconds % span, tz=UTC)


def _period_end(moment: datetime, span: int) -> datetime:
    start = period_start(moment, span)
    return start if start == moment else start + timedelta(seconds=span)


def _spread_to_half_hours(minutes: dict) -> dict:
    """Half-hour tallies from minute tallies (keys (version, span, start))."""
    tallies: dict = {}
    for (version_id, _, start), tally in minutes.items():
        key = (version_id, HALF_HOUR, period_start(start, HALF_HOUR))
        merge(tallies.setdefault(key, new_tally()), tally)
    return tallies


def tallies_of_entries(entries: list[dict]) -> dict:
    """The minute and half-hour tallies of a batch of log entries
    (prediction_log.new_entry dicts), keyed (version id, span, start)."""
    minutes: dict = {}
    for entry in entries:
        key = (entry["version_id"], MINUTE, period_start(entry["created_at"], MINUTE))
        tally = minutes.get(key)
        if tally is None:
            tally = minutes[key] = new_tally()
        add_row(tally, entry["latency_ms"], entry["error"], entry["label"], entry["confidence"], entry["input_text"])
    for tally in minutes.values():
        finish_characters(tally)
    return {**minutes, **_spread_to_half_hours(minutes)}


def feedback_tallies(labelled: list[tuple[int, datetime, bool]]) -> dict:
    """Tallies of feedback: (version id, the prediction's created_at, correct) each."""
    tallies: dict = {}
    for version_id, created_at, correct in labelled:
        for span in SPANS:
            tally = tallies.setdefault((version_id, span, period_start(created_at, span)), new_tally())
            tally["feedback"] += 1
            tally["correct"] += int(correct)
    return tallies


def apply_tallies(tallies: dict) -> None:
    """Add tallies to their stored rows, creating the missing ones. Call it
    inside the transaction that writes what they count: a batch that rolls
    back (a killed connection) takes its additions with it, and the retry
    adds them once. Rows are locked in key order, so two writers (the log
    writer of two gunicorn workers, a feedback call) cannot deadlock."""
    from rollouts.models import PredictionAggregate

    if not tallies:
        return
    keys = sorted(tallies)
    PredictionAggregate.objects.bulk_create(
        [PredictionAggregate(version_id=v, span_seconds=s, start=t) for v, s, t in keys], ignore_conflicts=True
    )
    wanted = functools.reduce(operator.or_, (Q(version_id=v, span_seconds=s, start=t) for v, s, t in keys))
    rows = list(
        PredictionAggregate.objects.select_for_update().filter(wanted).order_by("version_id", "span_seconds", "start")
    )
    for row in rows:
        key = (row.version_id, row.span_seconds, period_start(row.start, row.span_seconds))
        tally = merge(tally_of_row(row.__dict__), tallies[key])
        bound_characters(tally, SKETCH_CHARACTERS[row.span_seconds])
        for field, value in _stored(tally).items():
            setattr(row, field, value)
    PredictionAggregate.objects.bulk_update(rows, STORED_FIELDS)


def rebuild_aggregates(*, since: datetime, until: datetime, version_ids: list[int] | None = None) -> int:
    """Recompute the aggregates of [since, until), widened to whole
    half-hours, from the raw rows and their feedback (the backfill of rows
    logged before aggregates existed; `manage.py rebuild_prediction_aggregates`).
    One transaction per day. Meant for closed periods: a batch the log writer
    adds to a period while it is rebuilt may be counted twice or not at all.
    Returns the log rows read."""
    from rollouts.models import PredictionAggregate

    start = period_start(since, HALF_HOUR)
    end = _period_end(until, HALF_HOUR)
    read = 0
    while start < end:
        chunk_end = min(end, start + timedelta(days=1))
        with transaction.atomic():
            stale = PredictionAggregate.objects.filter(start__gte=start, start__lt=chunk_end)
            rows = PredictionLog.objects.filter(created_at__gte=start, created_at__lt=chunk_end)
            if version_ids is not None:
                stale = stale.filter(version_id__in=version_ids)
                rows = rows.filter(version_id__in=version_ids)
            stale.delete()
            minutes: dict = {}
            values = rows.order_by().values_list(
                "version_id",
                "created_at",
                "latency_ms",
                "error",
                "label",
                "confidence",
                "input_text",
                "feedback__correct",
            )
            for version_id, created_at, latency_ms, error, label, confidence, text, correct in values.iterator(
                chunk_size=5000
            ):
                key = (version_id, MINUTE, period_start(created_at, MINUTE))
                tally = minutes.get(key)
                if tally is None:
                    tally = minutes[key] = new_tally()
                add_row(tally, latency_ms, error, label, confidence, text)
                if correct is not None:
                    tally["feedback"] += 1
                    tally["correct"] += int(correct)
                read += 1
            for tally in minutes.values():
                finish_characters(tally)
            tallies = {**minutes, **_spread_to_half_hours(minutes)}
            created = []
            for (version_id, span, period), tally in sorted(tallies.items()):
                bound_characters(tally, SKETCH_CHARACTERS[span])
                created.append(
                    PredictionAggregate(version_id=version_id, span_seconds=span, start=period, **_stored(tally))
                )
            PredictionAggregate.objects.bulk_create(created, batch_size=1000)
        start = chunk_end
    return read


# --- aggregates: reads -------------------------------------------------------------------


def _cover(start: datetime, end: datetime) -> list[tuple[int, datetime, datetime]]:
    """[start, end) as (span, from, to) pieces: whole half-hours, whole
    minutes around them, and raw seconds (span 0) at the unaligned ends."""
    first_minute, last_minute = _period_end(start, MINUTE), period_start(end, MINUTE)
    if first_minute >= last_minute:
        return [(0, start, end)]
    pieces = [(0, start, first_minute)] if start < first_minute else []
    first_half, last_half = _period_end(start, HALF_HOUR), period_start(end, HALF_HOUR)
    if first_half < last_half:
        if first_minute < first_half:
            pieces.append((MINUTE, first_minute, first_half))
        pieces.append((HALF_HOUR, first_half, last_half))
        if last_half < last_minute:
            pieces.append((MINUTE, last_half, last_minute))
    else:
        pieces.append((MINUTE, first_minute, last_minute))
    if last_minute < end:
        pieces.append((0, last_minute, end))
    return pieces


def _merged(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[list[datetime]] = []
    for low, high in sorted(ranges):
        if merged and merged[-1][1] >= low:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return [(low, high) for low, high in merged]


def _ranges_filter(field: str, ranges: list[tuple[datetime, datetime]]) -> Q:
    return functools.reduce(operator.or_, (Q(**{f"{field}__gte": lo, f"{field}__lt": hi}) for lo, hi in ranges))


def aggregate_buckets(
    version_id: int, since: datetime, until: datetime, stride: timedelta, *, sketch: bool = True
) -> dict[int, dict]:
    """Bucket index (0 = the one starting at `since`) -> its tally, from the
    aggregates where whole minutes and half-hours fit the bucket and from the
    raw rows (an index range scan on version and time) for the seconds that
    do not; empty buckets are absent. `sketch` False leaves the characters out."""
    from rollouts.models import PredictionAggregate

    pieces: dict[int, list] = {0: [], MINUTE: [], HALF_HOUR: []}
    count = math.ceil((until - since) / stride)
    for index in range(count):
        start = since + index * stride
        for span, low, high in _cover(start, min(start + stride, until)):
            pieces[span].append((low, high))
    buckets: dict[int, dict] = defaultdict(new_tally)
    fields = [field for field in STORED_FIELDS if sketch or field != "characters"]
    for span in SPANS:
        ranges = _merged(pieces[span])
        if not ranges:
            continue
        rows = PredictionAggregate.objects.filter(version_id=version_id, span_seconds=span).filter(
            _ranges_filter("start", ranges)
        )
        for values in rows.values("start", *fields):
            merge(buckets[(values["start"] - since) // stride], tally_of_row(values))
    ranges = _merged(pieces[0])
    if ranges:
        rows = PredictionLog.objects.filter(version_id=version_id).filter(_ranges_filter("created_at", ranges))
        raw_tallies: dict[int, dict] = defaultdict(new_tally)
        for created_at, latency_ms, error, label, confidence, text, correct in rows.values_list(
            "created_at", "latency_ms", "error", "label", "confidence", "input_text", "feedback__correct"
        ):
            tally = raw_tallies[(created_at - since) // stride]
            add_row(tally, latency_ms, error, label, confidence, text if sketch else "")
            if correct is not None:
                tally["feedback"] += 1
                tally["correct"] += int(correct)
        for index, tally in raw_tallies.items():
            finish_characters(tally)
            merge(buckets[index], tally)
    return buckets


def histogram_percentile(tally: dict, fraction: float) -> float | None:
    """A latency percentile estimated from the histogram, as Prometheus's
    histogram_quantile does: the rank's bucket, interpolated linearly between
    its bounds, which are narrowed to the observed minimum and maximum (one
    call, or calls of one latency, give their exact value). Resolution: the
    bucket the true percentile lies in (bounds 1, 2.5, 5, 10, 25, ... ms)."""
    counts = tally["latency_buckets"]
    total = sum(counts)
    if not total:
        return None
    low, high = tally["latency_ms_min"], tally["latency_ms_max"]
    rank = fraction * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            lower = LATENCY_BUCKETS_MS[index - 1] if index else 0.0
            upper = LATENCY_BUCKETS_MS[index] if index < len(LATENCY_BUCKETS_MS) else high
            if low is not None:
                lower = max(lower, low)
            if high is not None:
                upper = min(upper, high)
            upper = max(upper, lower)
            return lower + (upper - lower) * (rank - below) / count
        below += count
    return high


def tally_sketch(tally: dict) -> dict:
    """The drift sketch of a tally, as rollouts.drift.measure_sketch takes it."""
    return {
        "texts": tally["texts"],
        "length_sum": tally["text_length_sum"],
        "length_bins": tally["length_bins"],
        "characters": tally["characters"],
    }
