"""ERASER faithfulness of a token ranking (DeYoung et al. 2020, "ERASER: A
Benchmark to Evaluate Rationalized NLP Models").

comprehensiveness = p(ŷ|x) − p(ŷ|x without the top-k % tokens)   (higher: the ranking found what matters)
sufficiency       = p(ŷ|x) − p(ŷ|only the top-k % tokens)        (lower: those tokens alone carry the decision)
AOPC              = the mean over the bins k ∈ {1, 5, 10, 20, 50}.

The same numbers for a seeded random ranking of the same texts are the
floor a reviewer should compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from explanations.masking import PreparedText

BINS = (1, 5, 10, 20, 50)


@dataclass
class FidelityCase:
    index: int  # the text's row in the report: seeds its random ranking
    prepared: PreparedText
    groups: list[list[int]]  # model tokens of each ranked unit
    ranking: list[int]  # unit indices, most important first
    label_index: int  # ŷ, the predicted label


def top_count(percent: int, n_units: int) -> int:
    # At least one unit, so the 1 % bin of a short text still removes something.
    return max(1, math.ceil(percent * n_units / 100))


def eraser(predictor, cases: list[FidelityCase], *, seed: int = 0, batch_size: int = 128) -> dict:
    """Comprehensiveness and sufficiency per bin (and AOPC) of the cases' rankings and of random ones."""
    if not cases:
        empty = {str(k): None for k in BINS} | {"aopc": None}
        return {
            "comprehensiveness": empty,
            "sufficiency": empty,
            "random_baseline": {"comprehensiveness": empty, "sufficiency": empty},
            "texts": 0,
        }
    strings: dict[str, int] = {}

    def row(text: str) -> int:
        return strings.setdefault(text, len(strings))

    # plan[case][ranking kind][bin] = (row without top-k, row with only top-k)
    plan = []
    full_rows = []
    for case in cases:
        full_rows.append(row(case.prepared.text))
        rng = np.random.default_rng([int(seed), int(case.index), 7])
        rankings = {"model": case.ranking, "random": [int(u) for u in rng.permutation(len(case.groups))]}
        everything = set(range(case.prepared.n))
        per_kind = {}
        for kind, ranking in rankings.items():
            bins = []
            for percent in BINS:
                top = {t for u in ranking[: top_count(percent, len(ranking))] for t in case.groups[u]}
                bins.append((row(case.prepared.render(top)), row(case.prepared.render(everything - top))))
            per_kind[kind] = bins
        plan.append(per_kind)

    probs = predictor.predict_proba(list(strings), batch_size=batch_size)
    out = {}
    for kind in ("model", "random"):
        comp = np.zeros((len(cases), len(BINS)))
        suff = np.zeros((len(cases), len(BINS)))
        for c, case in enumerate(cases):
            full = probs[full_rows[c], case.label_index]
            for b, (without_row, only_row) in enumerate(plan[c][kind]):
                comp[c, b] = full - probs[without_row, case.label_index]
                suff[c, b] = full - probs[only_row, case.label_index]
        out[kind] = {"comprehensiveness": _bins(comp), "sufficiency": _bins(suff)}
    return {**out["model"], "random_baseline": out["random"], "texts": len(cases)}


def _bins(matrix: np.ndarray) -> dict:
    means = matrix.mean(axis=0)
    result = {str(k): float(m) for k, m in zip(BINS, means)}
    result["aopc"] = float(means.mean())
    return result
