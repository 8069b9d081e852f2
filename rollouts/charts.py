"""Geometry of the monitoring charts, drawn as inline SVG by the templates
(rollouts/_chart.html): no JavaScript.
Numbers and coordinates only; every text (labels come from uploaded models)
goes through the templates' autoescaping."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

WIDTH = 560
HEIGHT = 170
LEFT = 56
RIGHT = 12
TOP = 10
BOTTOM = 24
PLOT_WIDTH = WIDTH - LEFT - RIGHT
PLOT_HEIGHT = HEIGHT - TOP - BOTTOM
# Distinguishable on white and for the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above value."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude * (1 + 1e-9):
            return step * magnitude
    return 10 * magnitude


def _format(value: float, unit: str = "") -> str:
    if unit == "%":
        return f"{value * 100:.3g} %"
    text = f"{value:.4g}"
    return f"{text} {unit}" if unit else text


def _time_label(moment: datetime, span_seconds: float) -> str:
    return moment.strftime("%m-%d %H:%M" if span_seconds > 86400 else "%H:%M")


def _x(index: int, count: int) -> float:
    return round(LEFT + (index + 0.5) * PLOT_WIDTH / max(count, 1), 1)


def _y(value: float, top: float) -> float:
    return round(TOP + PLOT_HEIGHT * (1 - max(0.0, min(value, top)) / top), 1)


def _x_ticks(buckets: list[dict]) -> list[dict]:
    if not buckets:
        return []
    span = (buckets[-1]["end"] - buckets[0]["start"]).total_seconds()
    picks = sorted({0, len(buckets) // 2, len(buckets) - 1})
    return [{"x": _x(i, len(buckets)), "label": _time_label(buckets[i]["start"], span)} for i in picks]


def line_chart(
    buckets: list[dict],
    series: list[tuple[str, Callable[[dict], float | None]]],
    *,
    unit: str = "",
    threshold: float | None = None,
    y_max: float | None = None,
    area: bool = False,
) -> dict:
    """Lines over time buckets. `series` is (name, value of a bucket); a
    missing value (None: nothing to measure) breaks the line instead of
    drawing a zero that did not happen."""
    values = [[get(bucket) for bucket in buckets] for _, get in series]
    seen = [v for column in values for v in column if v is not None]
    top = (
        y_max
        if y_max is not None
        else _nice_ceiling(max(seen + ([threshold] if threshold is not None else []), default=0.0))
    )
    count = len(buckets)
    lines = []
    for position, ((name, _), column) in enumerate(zip(series, values)):
        segments, current, dots = [], [], []
        for index, value in enumerate(column):
            if value is None:
                if current:
                    segments.append(current)
                current = []
                continue
            point = (_x(index, count), _y(value, top))
            current.append(point)
            dots.append(
                {
                    "x": point[0],
                    "y": point[1],
                    "title": f"{name} {_format(value, unit)} at {buckets[index]['start']:%Y-%m-%d %H:%M} UTC",
                }
            )
        if current:
            segments.append(current)
        lines.append(
            {
                "name": name,
                "colour": PALETTE[position % len(PALETTE)],
                "segments": [" ".join(f"{x},{y}" for x, y in segment) for segment in segments],
                # Filled to the axis under each run of values (requests: an area chart).
                "areas": [
                    " ".join(
                        [f"{segment[0][0]},{TOP + PLOT_HEIGHT}"]
                        + [f"{x},{y}" for x, y in segment]
                        + [f"{segment[-1][0]},{TOP + PLOT_HEIGHT}"]
                    )
                    for segment in segments
                ]
                if area and position == 0
                else [],
                "dots": dots,
            }
        )
    return {
        **_frame(),
        "lines": lines,
        "empty": not seen,
        "y_ticks": [{"y": _y(top * f, top), "label": _format(top * f, unit)} for f in (0, 0.5, 1)],
        "x_ticks": _x_ticks(buckets),
        "threshold": (
            {"y": _y(threshold, top), "label": f"limit {_format(threshold, unit)}"}
            if threshold is not None and threshold <= top
            else None
        ),
    }


def _frame() -> dict:
    """The plot area every chart shares (the template draws axes from it)."""
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": TOP + PLOT_HEIGHT,
    }


def stacked_bars(buckets: list[dict], *, key: str = "labels") -> dict:
    """Per bucket, one bar of the predicted-label counts stacked; colours by
    label in sorted order, so a label keeps its colour across versions."""
    labels = sorted({label for bucket in buckets for label in (bucket.get(key) or {})})
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    top = _nice_ceiling(max((sum((b.get(key) or {}).values()) for b in buckets), default=0))
    count = len(buckets)
    slot = PLOT_WIDTH / max(count, 1)
    bar_width = round(max(1.0, slot * 0.8), 1)
    bars = []
    for index, bucket in enumerate(buckets):
        counts = bucket.get(key) or {}
        total = sum(counts.values())
        base = TOP + PLOT_HEIGHT
        for label in labels:
            n = counts.get(label, 0)
            if not n:
                continue
            height = PLOT_HEIGHT * n / top
            base -= height
            share = n / total
            bars.append(
                {
                    "x": round(LEFT + index * slot + (slot - bar_width) / 2, 1),
                    "y": round(base, 1),
                    "width": bar_width,
                    "height": round(max(height, 0.5), 1),
                    "colour": colours[label],
                    "title": f"{label}: {n} ({share:.0%}) at {bucket['start']:%Y-%m-%d %H:%M} UTC",
                }
            )
    return {
        **_frame(),
        "bars": bars,
        "empty": not bars,
        "legend": [{"label": label, "colour": colours[label]} for label in labels],
        "y_ticks": [{"y": _y(top * f, top), "label": _format(top * f)} for f in (0, 0.5, 1)],
        "x_ticks": _x_ticks(buckets),
    }


def _drift(signal: str) -> Callable[[dict], float | None]:
    return lambda bucket: (bucket.get("drift") or {}).get(signal)


def version_charts(
    series: list[dict], *, thresholds: dict, drift_thresholds: dict, accuracy_floor: float | None
) -> list[dict]:
    """The charts of one version's monitoring panel, in page order."""
    charts = [
        {
            "title": "Requests",
            "kind": "line",
            "chart": line_chart(series, [("requests", lambda b: b["requests"])], area=True),
        },
        {
            "title": "Error rate",
            "kind": "line",
            "chart": line_chart(
                series,
                [("error rate", lambda b: b["error_rate"])],
                unit="%",
                threshold=thresholds.get("max_error_rate"),
            ),
        },
        {
            "title": "Latency",
            "kind": "line",
            "chart": line_chart(
                series,
                [
                    ("p50", lambda b: b["latency_p50"]),
                    ("p95", lambda b: b["latency_p95"]),
                    ("p99", lambda b: b["latency_p99"]),
                ],
                unit="ms",
                threshold=thresholds.get("max_latency_p95_ms"),
            ),
        },
        {
            "title": "Mean confidence",
            "kind": "line",
            "chart": line_chart(series, [("confidence", lambda b: b["mean_confidence"])], y_max=1.0),
        },
        {
            "title": "Live accuracy (feedback)",
            "kind": "line",
            "chart": line_chart(
                series, [("accuracy", lambda b: b["live_accuracy"])], y_max=1.0, threshold=accuracy_floor
            ),
        },
        {
            "title": "Input drift: character distribution (JS distance)",
            "kind": "line",
            "chart": line_chart(
                series,
                [
                    ("JS distance", _drift("character_js_distance")),
                    ("expected by sampling", _drift("sampling_distance")),
                    ("excess (alerted on)", _drift("character_js_excess")),
                ],
                y_max=1.0,
                threshold=drift_thresholds.get("character_js_distance"),
            ),
        },
        {
            "title": "Input drift: text length (PSI) and unknown characters",
            "kind": "line",
            "chart": line_chart(
                series,
                [("length PSI", _drift("length_psi")), ("unknown-rate increase", _drift("unknown_rate_increase"))],
                threshold=drift_thresholds.get("length_psi"),
            ),
        },
        {"title": "Predicted labels", "kind": "bars", "chart": stacked_bars(series)},
    ]
    for entry in charts:
        # A bar chart brings its own legend, empty when the window has no
        # predictions; only line charts derive one from their lines.
        legend = entry["chart"].get("legend")
        entry["legend"] = (
            legend
            if legend is not None
            else [{"label": line["name"], "colour": line["colour"]} for line in entry["chart"]["lines"]]
        )
    return charts
