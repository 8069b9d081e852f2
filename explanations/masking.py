"""A text as the model reads it, and the masking every explanation method
shares: render it with any set of tokens hidden, map words to model tokens,
and predict many masked renderings in padding-free batches.

Kept apart from the Explainer classes so that fidelity scoring (which needs
only the masking) and the explainers can import it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Progress = Callable[[float], None] | None


@dataclass
class PreparedText:
    """A text cut to what the model reads, with its tokens' spans, able to
    render itself with any set of tokens hidden."""

    text: str
    truncated: bool
    spans: list[tuple[int, int]]
    mask_text: str
    _gaps: list[str] = field(default_factory=list, repr=False)
    _pieces: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # The text between tokens (spaces, characters the tokenizer drops) is
        # always kept, so a rendering differs from the text only at hidden tokens.
        previous = 0
        for start, end in self.spans:
            self._gaps.append(self.text[previous:start])
            self._pieces.append(self.text[start:end])
            previous = end
        self._tail = self.text[previous:]

    @property
    def n(self) -> int:
        return len(self.spans)

    def render(self, hidden) -> str:
        """The text with the tokens whose indices are in ``hidden`` replaced by the mask."""
        mask = self.mask_text
        parts = []
        for i, (gap, piece) in enumerate(zip(self._gaps, self._pieces)):
            parts.append(gap)
            parts.append(mask if i in hidden else piece)
        parts.append(self._tail)
        return "".join(parts)

    def render_present(self, present: int) -> str:
        """The text keeping only the tokens whose bits are set in ``present``."""
        mask = self.mask_text
        parts = []
        for i, (gap, piece) in enumerate(zip(self._gaps, self._pieces)):
            parts.append(gap)
            parts.append(piece if (present >> i) & 1 else mask)
        parts.append(self._tail)
        return "".join(parts)


def prepare_text(predictor, text: str) -> PreparedText:
    """Cut ``text`` after the last token the model reads and say whether anything was cut."""
    text = str(text)
    tokens = [(start, end) for _, start, end in predictor.tokenize_with_offsets(text) if end > start]
    limit = getattr(predictor, "max_tokens", None)
    truncated = limit is not None and len(tokens) > limit
    if truncated:
        tokens = tokens[:limit]
        text = text[: tokens[-1][1]] if tokens else ""
    return PreparedText(text=text, truncated=truncated, spans=tokens, mask_text=predictor.mask_text)


def tokens_covered(prepared: PreparedText, units: list[tuple[int, int]]) -> list[list[int]]:
    """For each unit span (a word, say), the model tokens starting inside it."""
    groups: list[list[int]] = [[] for _ in units]
    j = 0
    for i, (start, _) in enumerate(prepared.spans):
        while j + 1 < len(units) and units[j + 1][0] <= start:
            j += 1
        if units and units[j][0] <= start < units[j][1]:
            groups[j].append(i)
    return groups


def predict_rows(
    predictor, strings: list[str], token_counts: list[int], batch_size: int, progress: Progress, span=(0.05, 0.95)
):
    """predict_proba over many masked texts, in batches of rows of similar token count.

    A "[MASK]" is six characters for one token, so the rows are planned by
    their token count, not their characters: sorted, then cut into batches of
    at most ``batch_size`` rows whose padded size stays within the predictor's
    token budget (more rows of short texts, fewer of long ones), which keeps
    padding (wasted forward work) near zero. Rows come back in their original
    order. Progress moves across ``span``.
    """
    import numpy as np

    from registry.batching import plan_batches

    out = np.zeros((len(strings), len(predictor.labels)))
    # Two special tokens ([CLS], [SEP]) ride along with every row.
    lengths = [count + 2 for count in token_counts]
    batches = plan_batches(lengths, max_rows=batch_size, token_budget=getattr(predictor, "batch_tokens", None))
    done_rows = 0
    next_report = 0.0
    for idx in batches:
        out[idx] = predictor.predict_proba([strings[i] for i in idx], batch_size=len(idx))
        done_rows += len(idx)
        done = done_rows / max(1, len(strings))
        if progress and done >= next_report:
            progress(span[0] + (span[1] - span[0]) * done)
            next_report = done + 0.05
    return out
