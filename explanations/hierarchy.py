"""How a Chinese text breaks into clauses, words and model tokens.

SHAP's Owen values are computed over this tree (clauses, then jieba words,
then the model's own tokens), LIME and PFI use its words as features. jieba
is imported on first use only: the web process never segments text.
"""

from __future__ import annotations

import logging
import tempfile
import threading

# Clause boundaries: Chinese full-width and ASCII punctuation, and line breaks.
CLAUSE_PUNCTUATION = frozenset("，。！？；：、,.!?;:\n")
# An ASCII ".", "," or ":" between two digits is part of a number (3.5, 1,000, 10:30).
NUMERIC_SEPARATORS = frozenset(".,:")

# A node of the tree: a token index (leaf) or the list of its children.
Node = int | list

_segmenter = None
_segmenter_lock = threading.Lock()


def _jieba():
    global _segmenter
    with _segmenter_lock:
        if _segmenter is None:
            import jieba

            # jieba logs its dictionary loading at DEBUG on every worker start,
            # and writes its prefix-dict cache to a temp dir that must be writable.
            jieba.setLogLevel(logging.WARNING)
            segmenter = jieba.Tokenizer()
            segmenter.tmp_dir = tempfile.gettempdir()
            segmenter.initialize()
            _segmenter = segmenter
    return _segmenter


def clause_spans(text: str) -> list[tuple[int, int]]:
    """Clauses as (start, end) spans covering ``text``; punctuation closes the clause before it."""
    spans: list[tuple[int, int]] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        is_break = ch in CLAUSE_PUNCTUATION and not (
            ch in NUMERIC_SEPARATORS and 0 < i < n - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()
        )
        if is_break:
            # A run of punctuation ("！！", "。”") stays with its clause.
            while i + 1 < n and text[i + 1] in CLAUSE_PUNCTUATION:
                i += 1
            spans.append((start, i + 1))
            start = i + 1
        i += 1
    if start < n:
        spans.append((start, n))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def word_spans(text: str) -> list[tuple[int, int]]:
    """jieba words of ``text`` as spans, segmented clause by clause; whitespace is skipped."""
    segmenter = _jieba()
    spans: list[tuple[int, int]] = []
    for c_start, c_end in clause_spans(text):
        for word, w_start, w_end in segmenter.tokenize(text[c_start:c_end]):
            if word.strip():
                spans.append((c_start + w_start, c_start + w_end))
    return spans


def _collapse(node: Node) -> Node:
    # A node with one child adds nothing to Owen values (the child inherits
    # the node's whole game), so it is removed to keep the tree shallow.
    while isinstance(node, list) and len(node) == 1:
        node = node[0]
    if isinstance(node, list):
        return [_collapse(child) for child in node]
    return node


def _group_of(starts: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """For each token start offset, the index of the span holding it (or the last span before it)."""
    groups = []
    j = 0
    for start in starts:
        while j + 1 < len(spans) and spans[j + 1][0] <= start:
            j += 1
        groups.append(j)
    return groups


def build_tree(text: str, token_spans: list[tuple[int, int]]) -> Node:
    """Clauses → jieba words → model tokens, as nested lists of token indices.

    A token belongs to the clause and word its first character falls in, so
    every node covers a contiguous run of tokens even when a model token
    straddles a jieba word boundary.
    """
    if not token_spans:
        return []
    starts = [start for start, _ in token_spans]
    clauses = clause_spans(text) or [(0, len(text))]
    clause_of = _group_of(starts, clauses)
    tree: list = []
    for c, (c_start, c_end) in enumerate(clauses):
        members = [i for i, group in enumerate(clause_of) if group == c]
        if not members:
            continue
        words = [(c_start + s, c_start + e) for s, e in _clause_words(text[c_start:c_end])] or [(c_start, c_end)]
        word_of = _group_of([starts[i] for i in members], words)
        clause: list = []
        for w in sorted(set(word_of)):
            clause.append([i for i, group in zip(members, word_of) if group == w])
        tree.append(clause)
    return _collapse(tree)


def _clause_words(clause: str) -> list[tuple[int, int]]:
    return [(s, e) for word, s, e in _jieba().tokenize(clause) if word.strip()]


def leaves(node: Node) -> list[int]:
    if isinstance(node, int):
        return [node]
    return [leaf for child in node for leaf in leaves(child)]
