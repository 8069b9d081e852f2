"""Global importance of a local report (SHAP, LIME, IG): which tokens or
words the model leans on across the whole evaluation set.

A token's importance for a label is its *share of the attribution mass*:
Σ|φ| of the token over every text ÷ Σ|φ| of every token, in percent, so the
shares of a label add up to 100 %. This is the normalised contribution that
the mission's source platform calls AMIM, and it agrees with shap's own bar
plot (mean |φ| over all samples, absence counted as zero) up to a constant.
Ranking by the mean |φ| per occurrence instead lets a character seen once
with a large value outrank the tokens the model uses in hundreds of texts.

A token enters the ranking only when it occurs in at least ``min_texts``
distinct texts; the mass of the others is one "rare tokens" row, so nothing
is hidden and the shares still add up. A bootstrap over texts gives each
share an interval and says whether the token's rank is stable.

Computed at read time from the per-text values: stored results are evidence
(their digests are) and are never rewritten, so reports made before this
view existed get it too.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

DEFAULT_MIN_TEXTS = 3
STORED_TOP = 50
BOOTSTRAP_SAMPLES = 200
# A rank is called unstable when, in more than this share of the bootstrap
# resamples, the token lands more than RANK_SLACK places away from its rank.
RANK_SLACK = 2
UNSTABLE_SHARE = 0.10
UNITS = ("token", "word")


def _word_groups(entry: dict) -> list[tuple[str, list[int]]]:
    """The report's tokens grouped by the jieba words of the hierarchy (a
    token belongs to the word its first character falls in, as in
    explanations.hierarchy.build_tree)."""
    from explanations.hierarchy import word_spans

    text = entry.get("text") or ""
    tokens = entry.get("tokens") or []
    words = word_spans(text)
    groups: dict[int, list[int]] = defaultdict(list)
    j = 0
    for position, token in enumerate(tokens):
        start = token.get("start")
        if not isinstance(start, int) or not words:
            groups[-1 - position].append(position)  # no offsets: the token stands alone
            continue
        while j + 1 < len(words) and words[j + 1][0] <= start:
            j += 1
        groups[j].append(position)
    named = []
    for key in sorted(groups, key=lambda k: groups[k][0]):
        members = groups[key]
        starts = [tokens[m].get("start") for m in members]
        ends = [tokens[m].get("end") for m in members]
        if all(isinstance(v, int) for v in starts + ends) and key >= 0:
            ws, we = words[key]
            name = text[min(ws, min(starts)) : max(we, max(ends))]
        else:
            name = "".join(str(tokens[m].get("text", "")) for m in members)
        named.append((name, members))
    return named


def _units(entry: dict, unit: str) -> list[tuple[str, list[int]]]:
    if unit == "word":
        return _word_groups(entry)
    return [(str(token.get("text", "")), [position]) for position, token in enumerate(entry.get("tokens") or [])]


def global_importance(
    results: dict,
    *,
    unit: str = "token",
    min_texts: int = DEFAULT_MIN_TEXTS,
    top: int = STORED_TOP,
    bootstrap: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict:
    """Per label: the ranked rows (at most ``top``), the rare-tokens row and
    the mass of ranked tokens beyond ``top``. A word's value is the sum of
    its tokens' values (Owen/Shapley values are additive over a coalition's
    members)."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}")
    entries = [entry for entry in (results.get("texts") or []) if isinstance(entry, dict)]
    labels = list(results.get("labels") or [])
    grouped = [_units(entry, unit) for entry in entries]
    # A report of fewer texts than min_texts ranks what occurs in all of them.
    min_texts = max(1, min(int(min_texts), len(entries)))
    out = {"unit": unit, "min_texts": min_texts, "texts": len(entries), "labels": {}}
    for label in labels:
        # Per text and unit: |value| summed over the unit's occurrences, signed sum, occurrences.
        per_text: list[dict[str, list[float]]] = []
        for entry, units in zip(entries, grouped):
            values = (entry.get("values") or {}).get(label) or []
            stats: dict[str, list[float]] = {}
            for name, members in units:
                value = float(sum(values[m] for m in members if m < len(values)))
                row = stats.setdefault(name, [0.0, 0.0, 0])
                row[0] += abs(value)
                row[1] += value
                row[2] += 1
            per_text.append(stats)
        out["labels"][label] = _rank(per_text, min_texts=min_texts, top=top, bootstrap=bootstrap, seed=seed)
    return out


def _rank(per_text: list[dict[str, list[float]]], *, min_texts: int, top: int, bootstrap: int, seed: int) -> dict:
    totals: dict[str, list[float]] = {}
    for stats in per_text:
        for name, (mass, signed, count) in stats.items():
            row = totals.setdefault(name, [0.0, 0.0, 0, 0])
            row[0] += mass
            row[1] += signed
            row[2] += count
            row[3] += 1
    total_mass = sum(row[0] for row in totals.values())
    scale = 100.0 / total_mass if total_mass > 0 else 0.0
    eligible = sorted((name for name, row in totals.items() if row[3] >= min_texts), key=lambda n: (-totals[n][0], n))
    ranked, beyond = eligible[:top], eligible[top:]
    rare = [name for name, row in totals.items() if row[3] < min_texts]
    rows = [
        {
            "rank": position + 1,
            "token": name,
            "share": totals[name][0] * scale,
            "texts": int(totals[name][3]),
            "count": int(totals[name][2]),
            "mean": totals[name][1] / totals[name][2],
            "mean_abs": totals[name][0] / totals[name][2],
        }
        for position, name in enumerate(ranked)
    ]
    _bootstrap(rows, per_text, samples=bootstrap, seed=seed)
    return {
        "rows": rows,
        "rare": {"tokens": len(rare), "share": sum(totals[n][0] for n in rare) * scale, "below_texts": int(min_texts)},
        "beyond_top": {"tokens": len(beyond), "share": sum(totals[n][0] for n in beyond) * scale},
        "total_mass": total_mass,
    }


def _bootstrap(rows: list[dict], per_text: list[dict[str, list[float]]], *, samples: int, seed: int) -> None:
    """Resample texts with replacement: a 95 % interval per share and, per
    ranked token, whether its rank holds."""
    n = len(per_text)
    if not rows or n < 2 or samples < 1:
        for row in rows:
            row.update(share_low=row["share"], share_high=row["share"], rank_unstable=False)
        return
    names = [row["token"] for row in rows]
    column = {name: j for j, name in enumerate(names)}
    mass = np.zeros((n, len(names)))
    text_mass = np.zeros(n)
    for i, stats in enumerate(per_text):
        for name, (m, _, _) in stats.items():
            text_mass[i] += m
            j = column.get(name)
            if j is not None:
                mass[i, j] = m
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=samples).astype(float)
    denominators = weights @ text_mass
    denominators[denominators == 0] = np.inf
    shares = 100.0 * (weights @ mass) / denominators[:, None]
    low, high = np.percentile(shares, [2.5, 97.5], axis=0)
    # Rank of each token within the ranked list, per resample (1 = largest share).
    order = np.argsort(-shares, axis=1, kind="stable")
    ranks = np.empty_like(order)
    ranks[np.arange(samples)[:, None], order] = np.arange(1, len(names) + 1)
    for j, row in enumerate(rows):
        moved = np.mean(np.abs(ranks[:, j] - row["rank"]) > RANK_SLACK)
        row.update(
            share_low=float(low[j]),
            share_high=float(high[j]),
            rank_unstable=bool(moved > UNSTABLE_SHARE),
        )


def view_params(query) -> tuple[str, int]:
    """(unit, min_texts) from an export's query string; 400 naming the field otherwise."""
    from glassbox.errors import InvalidInput

    unit = query.get("unit", "token")
    if unit not in UNITS:
        raise InvalidInput(f"unit must be one of {', '.join(UNITS)}, not {unit!r}", field="unit")
    raw = query.get("min_texts", str(DEFAULT_MIN_TEXTS))
    try:
        min_texts = int(raw)
    except (TypeError, ValueError):
        min_texts = 0
    if not 1 <= min_texts <= 1000:
        raise InvalidInput(f"min_texts must be a whole number from 1 to 1000, not {raw!r}", field="min_texts")
    return unit, min_texts


def cached_global_importance(report, *, unit: str = "token", min_texts: int = DEFAULT_MIN_TEXTS) -> dict:
    """global_importance for a succeeded report, cached: a report's results
    never change once it has succeeded, and a 5,000-text report takes
    seconds to re-rank."""
    from django.core.cache import cache

    key = f"glassbox:global-importance:v1:{report.pk}:{report.finished_at and report.finished_at.timestamp()}:{unit}:{int(min_texts)}"
    found = cache.get(key)
    if found is None:
        found = global_importance(report.results or {}, unit=unit, min_texts=min_texts)
        cache.set(key, found, 24 * 3600)
    return found
