"""What the report pages draw, computed from a report's results: token heat
maps, server-rendered SVG bar charts, the fidelity table and the comparison
of two versions. Numbers and geometry only; the templates escape all text."""

from __future__ import annotations

HEATMAP_TEXTS = 50
TOP_TOKENS = 15
BAR_ROW = 20
BAR_LEFT = 110
BAR_WIDTH = 300
FIDELITY_LEVELS = ("1", "5", "10", "20", "50", "aopc")

# Red pushes toward the label, blue away from it.
POSITIVE_RGB = "220, 38, 38"
NEGATIVE_RGB = "37, 99, 235"


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def token_style(value: float, scale: float) -> str:
    strength = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    rgb = POSITIVE_RGB if value >= 0 else NEGATIVE_RGB
    return f"background-color: rgba({rgb}, {0.08 + 0.8 * strength:.3f})"


# value ± Z95 · standard error is the 95 % interval of a sampled SHAP value.
Z95 = 1.96


def heatmap(results: dict, *, limit: int = HEATMAP_TEXTS) -> list[dict]:
    """Per text: its tokens coloured by their value toward the predicted label.

    Where the text carries standard errors (SHAP since issue 12), a token whose
    95 % interval includes 0 is marked uncertain, and the row says what share
    of its tokens have a sign certain at 95 %. Older reports have none: their
    tokens are drawn as before and the share is None.
    """
    rows = []
    for entry in (results.get("texts") or [])[:limit]:
        text = entry.get("text") or ""
        label = entry.get("predicted_label")
        values = [(_number(v) or 0.0) for v in (entry.get("values") or {}).get(label) or []]
        errors = (entry.get("std_errors") or {}).get(label)
        if not isinstance(errors, list) or len(errors) != len(values):
            errors = None
        scale = max((abs(v) for v in values), default=0.0)
        tokens = []
        certain_count = 0
        previous = 0
        for position, token in enumerate(entry.get("tokens") or []):
            start, end = token.get("start"), token.get("end")
            valid = isinstance(start, int) and isinstance(end, int) and previous <= start <= end <= len(text)
            if valid and start > previous:
                tokens.append({"text": text[previous:start], "gap": True})
            shown = text[start:end] if valid else token.get("text", "")
            value = values[position] if position < len(values) else 0.0
            title = f"{token.get('text', shown)}: {value:+.5f} toward {label}"
            uncertain = False
            if errors is not None:
                error = _number(errors[position]) or 0.0
                uncertain = abs(value) <= Z95 * error
                certain_count += 0 if uncertain else 1
                title += f" ± {Z95 * error:.5f} (95 %){', sign uncertain' if uncertain else ''}"
            tokens.append(
                {
                    "text": shown,
                    "value": value,
                    "style": token_style(value, scale),
                    "title": title,
                    "uncertain": uncertain,
                }
            )
            if valid:
                previous = end
        if previous < len(text):
            tokens.append({"text": text[previous:], "gap": True})
        probabilities = entry.get("probabilities") or {}
        rows.append(
            {
                "index": entry.get("index"),
                "label": label,
                "probability": _number(probabilities.get(label)),
                "true_label": entry.get("true_label"),
                "truncated": bool(entry.get("truncated")),
                "additivity_error": _number(entry.get("additivity_error")),
                "completeness_error": _number(entry.get("completeness_error")),
                "r2": _number(entry.get("r2")),
                "sign_certain_share": (certain_count / len(values) if values else None) if errors is not None else None,
                "evaluations": entry.get("evaluations") if isinstance(entry.get("evaluations"), int) else None,
                "exact": entry.get("exact") is True,
                "tokens": tokens,
            }
        )
    return rows


def bar_chart(
    rows: list[dict],
    *,
    value_key: str,
    sign_key: str | None = None,
    error_key: str | None = None,
    top: int = TOP_TOKENS,
) -> dict:
    """Horizontal bars, longest first: geometry for an inline SVG."""
    rows = [row for row in rows if _number(row.get(value_key)) is not None][:top]
    scale = max((abs(_number(row[value_key])) for row in rows), default=0.0) or 1.0
    bars = []
    for position, row in enumerate(rows):
        value = _number(row[value_key])
        sign = _number(row.get(sign_key)) if sign_key else value
        width = max(1.0, BAR_WIDTH * abs(value) / scale)
        error = _number(row.get(error_key)) if error_key else None
        bars.append(
            {
                "token": str(row.get("token", "")),
                "value": value,
                "y": position * BAR_ROW,
                "text_y": position * BAR_ROW + 14,
                "width": round(width, 1),
                "end_x": round(BAR_LEFT + width + 4, 1),
                "fill": f"rgb({POSITIVE_RGB})" if (sign or 0) >= 0 else f"rgb({NEGATIVE_RGB})",
                "label": f"{value:.4f}" + (f" ± {error:.4f}" if error is not None else ""),
                "new": bool(row.get("new")),
            }
        )
    return {
        "bars": bars,
        "height": max(BAR_ROW, len(bars) * BAR_ROW + 4),
        "width": BAR_LEFT + BAR_WIDTH + 90,
        "left": BAR_LEFT,
        "label_x": BAR_LEFT - 6,
    }


def share_chart(rows: list[dict], *, top: int = TOP_TOKENS) -> dict:
    """Bars of each token's share of the attribution mass (percent), coloured
    by the sign of its mean value; the label carries the bootstrap interval
    and a warning sign where the rank is unstable."""
    chart = bar_chart(rows, value_key="share", sign_key="mean", top=top)
    for bar, row in zip(chart["bars"], rows):
        low, high = _number(row.get("share_low")), _number(row.get("share_high"))
        interval = f" [{low:.1f}–{high:.1f}]" if low is not None and high is not None else ""
        bar["unstable"] = bool(row.get("rank_unstable"))
        bar["label"] = f"{bar['value']:.1f} %{interval}" + (" ⚠" if bar["unstable"] else "")
        if bar["unstable"]:
            bar["token"] = f"{bar['token']} ⚠"
    return chart


def global_charts(importance: dict, *, top: int = TOP_TOKENS) -> list[dict]:
    """One chart per label from explanations.global_importance, with the
    rare-tokens row and the ranked tokens beyond the chart as totals."""
    charts = []
    for label, ranked in ((importance or {}).get("labels") or {}).items():
        rows = ranked.get("rows") or []
        shown = rows[:top]
        rest = sum(_number(row.get("share")) or 0.0 for row in rows[top:])
        rest += _number((ranked.get("beyond_top") or {}).get("share")) or 0.0
        charts.append(
            {
                "label": label,
                **share_chart(shown, top=top),
                "rare": ranked.get("rare") or {},
                "rest_share": rest,
                "shown_share": sum(_number(row.get("share")) or 0.0 for row in shown),
            }
        )
    return charts


def legacy_global_charts(global_rows: dict, *, top: int = TOP_TOKENS) -> list[dict]:
    """A SHAP summary stored inside an older PFI report: rows that carry a
    share are drawn by share; rows from before the share ranking by mean |φ|."""
    charts = []
    for label, rows in (global_rows or {}).items():
        if not isinstance(rows, list):
            continue
        if rows and all("share" in row for row in rows):
            charts.append({"label": label, **share_chart(rows, top=top)})
        else:
            charts.append({"label": label, **bar_chart(rows, value_key="mean_abs", sign_key="mean", top=top)})
    return charts


def pfi_chart(results: dict, *, top: int = TOP_TOKENS) -> dict:
    features = sorted(results.get("features") or [], key=lambda f: -(_number(f.get("accuracy_drop_mean")) or 0.0))
    return bar_chart(features, value_key="accuracy_drop_mean", error_key="accuracy_drop_std", top=top)


def fidelity_table(fidelity: dict | None) -> list[dict]:
    """Rows of (level, comprehensiveness, its random baseline, sufficiency, its baseline)."""
    if not fidelity or "comprehensiveness" not in fidelity:
        return []
    random = fidelity.get("random_baseline") or {}
    table = []
    for level in FIDELITY_LEVELS:
        table.append(
            {
                "level": "AOPC" if level == "aopc" else f"top {level} %",
                "comprehensiveness": _number((fidelity.get("comprehensiveness") or {}).get(level)),
                "comprehensiveness_random": _number((random.get("comprehensiveness") or {}).get(level)),
                "sufficiency": _number((fidelity.get("sufficiency") or {}).get(level)),
                "sufficiency_random": _number((random.get("sufficiency") or {}).get(level)),
            }
        )
    return table


def compare_globals(old: dict, new: dict, *, top: int = TOP_TOKENS) -> list[dict]:
    """Per label, both versions' top tokens by share of the attribution mass
    side by side (``old``/``new`` as explanations.global_importance returns
    them); the new version's tokens that were not among the old version's
    top are marked `new`, and `shifts` lists the largest gains in share."""
    old_labels = (old or {}).get("labels") or {}
    new_labels = (new or {}).get("labels") or {}
    comparison = []
    for label in sorted(set(old_labels) | set(new_labels)):
        old_rows = (old_labels.get(label) or {}).get("rows") or []
        new_rows = (new_labels.get(label) or {}).get("rows") or []
        old_top = {row.get("token") for row in old_rows[:top]}
        old_share = {row.get("token"): _number(row.get("share")) or 0.0 for row in old_rows}
        marked = [{**row, "new": row.get("token") not in old_top} for row in new_rows]
        shifts = []
        for row in new_rows:
            gain = (_number(row.get("share")) or 0.0) - old_share.get(row.get("token"), 0.0)
            if gain > 0:
                shifts.append(
                    {
                        "token": row.get("token"),
                        "old": old_share.get(row.get("token")),
                        "new": _number(row.get("share")),
                        "gain": gain,
                    }
                )
        shifts.sort(key=lambda s: -s["gain"])
        comparison.append(
            {
                "label": label,
                "old": share_chart(old_rows, top=top),
                "new": share_chart(marked[:top], top=top),
                "shifts": shifts[:10],
            }
        )
    return comparison
