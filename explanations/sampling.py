"""Drawing a report's texts from a large dataset: n rows stratified by label,
the same rows for the same seed (the worker draws them again from the
immutable dataset, so only {"n", "seed"} is stored with the report)."""

from __future__ import annotations

import random
from collections import defaultdict


def stratified_sample(labels: list[str], n: int, seed: int) -> list[int]:
    """Indices of ``n`` rows (ascending), each label's share as in the whole
    set (largest remainders decide the rounding), drawn uniformly within each
    label by a generator seeded with ``seed``."""
    if n >= len(labels):
        return list(range(len(labels)))
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[str(label)].append(index)
    names = sorted(by_label)
    exact = {name: n * len(by_label[name]) / len(labels) for name in names}
    counts = {name: int(exact[name]) for name in names}
    short = n - sum(counts.values())
    for name in sorted(names, key=lambda name: (-(exact[name] - counts[name]), name))[:short]:
        counts[name] += 1
    rng = random.Random(f"glassbox-sample:{int(seed)}")
    chosen: list[int] = []
    for name in names:
        chosen.extend(rng.sample(by_label[name], counts[name]))
    return sorted(chosen)
