"""Prediction logs of one version summed into time buckets: requests,
errors, latency percentiles, predicted labels, confidence, feedback and a
sample of the input texts (for drift).

PostgreSQL does the counting and the percentiles (`date_bin`,
`percentile_cont`); other databases (the SQLite demo) get the same numbers
from a Python pass over the rows. Percentiles interpolate linearly between
ranks, as `percentile_cont` does (`percentile`, which the rollout analysis
uses too).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta

from django.db import connection

from rollouts.models import Feedback, PredictionLog

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
