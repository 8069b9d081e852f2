"""How many texts go through the model at once.

Rows are sorted by token length and cut into batches whose padded size
(rows x longest row) stays within a token budget, so short texts travel in
large batches, long ones in small batches, and almost no padding is computed.
When a device runs out of memory the batch is halved and retried; only a
single row that still does not fit fails, with a clear reason.

No torch import here: the explanation code and the web process use the planner.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

# Padded tokens per forward pass: 128 rows of 64 tokens, 16 rows of 512.
DEFAULT_BATCH_TOKENS = 8192


def batch_token_budget() -> int:
    """The padded-token budget of one forward pass (GLASSBOX_BATCH_TOKENS)."""
    try:
        return max(1, int(os.environ.get("GLASSBOX_BATCH_TOKENS", DEFAULT_BATCH_TOKENS)))
    except ValueError:
        return DEFAULT_BATCH_TOKENS


def plan_batches(lengths: Sequence[int], *, max_rows: int, token_budget: int | None) -> list[list[int]]:
    """Row indices in batches: ascending token length, at most ``max_rows`` rows
    each, and rows x longest length <= ``token_budget`` (a longer row than the
    budget still gets a batch of its own). ``token_budget`` None: rows only."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    max_rows = max(1, int(max_rows))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Ascending order: the row being added is the longest of the batch.
        longest = max(1, int(lengths[i]))
        fits_budget = token_budget is None or (len(current) + 1) * longest <= token_budget
        if current and (len(current) >= max_rows or not fits_budget):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class OutOfMemory(Exception):
    """Even a batch of one row does not fit in the device's memory."""


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's CUDA OOM, a CPU allocator failure, or ONNX Runtime failing to allocate."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        marker in message for marker in ("out of memory", "failed to allocate memory", "can't allocate memory")
    )


def run_halving(
    rows: list[int],
    forward: Callable[[list[int]], object],
    *,
    on_out_of_memory: Callable[[int], None] | None = None,
) -> list[tuple[list[int], object]]:
    """``forward(rows)``; on out-of-memory, the two halves one after the other,
    recursively. Returns (rows, result) pairs covering ``rows`` in order.
    ``on_out_of_memory(n)`` hears of each failed batch size (to free caches and
    lower the budget for the batches that follow)."""
    try:
        return [(rows, forward(rows))]
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        if on_out_of_memory is not None:
            on_out_of_memory(len(rows))
        if len(rows) == 1:
            raise OutOfMemory(
                f"out of memory on a batch of one text ({type(exc).__name__}: {str(exc).strip()[:200]})"
            ) from exc
    middle = len(rows) // 2
    return run_halving(rows[:middle], forward, on_out_of_memory=on_out_of_memory) + run_halving(
        rows[middle:], forward, on_out_of_memory=on_out_of_memory
    )
