"""SHAP as Owen values over the Chinese hierarchy clauses → jieba words → model tokens.

Implemented directly rather than through shap.PartitionExplainer: shap's
partition tree is binary and knows only ASCII punctuation, and at a budget it
leaves whole subtrees unexpanded, so their tokens share one value. Here:

* exact: when every coalition the Owen formula needs fits in ``max_evals``,
  the values are the Owen values of the tree (tested against a brute force);
* at a budget: hierarchy-respecting random orders (the Owen value is the mean
  marginal contribution over orders in which every node's tokens are
  contiguous), in antithetic pairs (each order and its reverse). Every token
  gets its own marginal contribution, and each order's contributions
  telescope to f(x) − f(all masked), so additivity holds to rounding error.

The coalitions of all texts of a chunk go into shared predict_proba batches.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from explanations.explainers.base import LocalExplainer, Param, chunk_seed
from explanations.hierarchy import Node, build_tree, leaves
from explanations.masking import PreparedText, Progress, predict_rows, prepare_text

# Beyond this many Owen terms the exact enumeration is not even attempted:
# the terms are Python tuples, and a few hundred thousand is seconds of work.
EXACT_TERMS_FACTOR = 40
EXACT_TERMS_CAP = 400_000


def _mask_of(node: Node) -> int:
    bits = 0
    for leaf in leaves(node):
        bits |= 1 << leaf
    return bits


def count_owen_terms(node: Node) -> int:
    """How many (token, coalition) terms the exact Owen formula has for this tree."""
    if isinstance(node, int):
        return 1
    m = len(node)
    return sum((1 << (m - 1)) * count_owen_terms(child) for child in node)


def owen_terms(tree: Node) -> list[tuple[int, int, float]]:
    """(token, coalition without it, weight) for the exact Owen value:
    φ_i = Σ weight · (v(coalition ∪ {i}) − v(coalition)).

    At each node, a child's siblings join the coalition as whole subsets T
    with Shapley weight |T|!(m−|T|−1)!/m!, and the recursion continues inside
    the child with that coalition as context.
    """
    terms: list[tuple[int, int, float]] = []

    def walk(node: Node, context: int, weight: float) -> None:
        if isinstance(node, int):
            terms.append((node, context, weight))
            return
        m = len(node)
        masks = [_mask_of(child) for child in node]
        for j, child in enumerate(node):
            others = [masks[k] for k in range(m) if k != j]
            for size in range(m):
                w = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                for subset in combinations(others, size):
                    joined = context
                    for bits in subset:
                        joined |= bits
                    walk(child, joined, weight * w)

    if isinstance(tree, int) or tree:
        walk(tree, 0, 1.0)
    return terms


def hierarchical_order(node: Node, rng: np.random.Generator) -> list[int]:
    """A random token order in which every node's tokens stay together."""
    if isinstance(node, int):
        return [node]
    order: list[int] = []
    for k in rng.permutation(len(node)):
        order.extend(hierarchical_order(node[int(k)], rng))
    return order


def sampled_terms(tree: Node, n_tokens: int, n_orders: int, rng: np.random.Generator) -> list[tuple[int, int, float]]:
    terms: list[tuple[int, int, float]] = []
    weight = 1.0 / n_orders
    orders: list[list[int]] = []
    while len(orders) < n_orders:
        order = hierarchical_order(tree, rng)
        orders.append(order)
        if len(orders) < n_orders:
            # The reverse order pairs early with late contributions: much lower variance.
            orders.append(order[::-1])
    for order in orders:
        present = 0
        for token in order:
            terms.append((token, present, weight))
            present |= 1 << token
    return terms


def plan_terms(tree: Node, n_tokens: int, max_evals: int, rng: np.random.Generator) -> tuple[list, bool]:
    """The exact terms if their coalitions fit the budget, else sampled orders."""
    if n_tokens == 0:
        return [], True
    if count_owen_terms(tree) <= min(EXACT_TERMS_FACTOR * max_evals, EXACT_TERMS_CAP):
        terms = owen_terms(tree)
        coalitions = {c for _, c, _ in terms} | {c | (1 << t) for t, c, _ in terms}
        if len(coalitions) <= max_evals:
            return terms, True
    # Each order costs n − 1 new coalitions (empty and full are shared). One
    # order is the floor, even over budget: every token must get a value.
    n_orders = max(1, (max_evals - 2) // max(1, n_tokens - 1))
    return sampled_terms(tree, n_tokens, n_orders, rng), False


class OwenShapExplainer(LocalExplainer):
    method = "shap"
    PARAMS = {
        "max_evals": Param(int, 500, 10, 100_000, help="model evaluations per text"),
        "seed": Param(int, 0, 0, 2**31 - 1),
        "chunk_size": Param(int, 25, 1, 1000, help="texts per chunk"),
        "batch_size": Param(int, 128, 1, 4096, help="rows per model forward pass"),
    }

    def rows_per_text(self, params: dict, n_labels: int) -> int:
        return int(params["max_evals"])  # fewer when a short text is computed exactly

    def run_chunk(self, predictor, texts, labels, chunk: dict, params: dict, progress: Progress = None) -> dict:
        params = self.validate_params(params)
        indices = range(int(chunk["start"]), min(len(texts), int(chunk["stop"])))
        rows: dict[str, int] = {}
        token_counts: list[int] = []
        plans = []
        for index in indices:
            prepared = prepare_text(predictor, texts[index])
            tree = build_tree(prepared.text, prepared.spans)
            rng = np.random.default_rng(chunk_seed(params["seed"], index))
            terms, exact = plan_terms(tree, prepared.n, params["max_evals"], rng)
            full = (1 << prepared.n) - 1
            coalition_rows: dict[int, int] = {}
            for coalition in [0, full] + [c for _, c, _ in terms] + [c | (1 << t) for t, c, _ in terms]:
                if coalition not in coalition_rows:
                    # Identical strings across texts (e.g. all masked) share a row.
                    string = prepared.render_present(coalition)
                    if string not in rows:
                        rows[string] = len(rows)
                        token_counts.append(prepared.n)
                    coalition_rows[coalition] = rows[string]
            plans.append((index, prepared, terms, exact, coalition_rows, full))
        if progress:
            progress(0.05)
        values = predict_rows(predictor, list(rows), token_counts, params["batch_size"], progress)

        entries = []
        for index, prepared, terms, exact, coalition_rows, full in plans:
            entries.append(
                self._entry(predictor, texts, labels, index, prepared, terms, exact, coalition_rows, full, values)
            )
        if progress:
            progress(1.0)
        return {"texts": entries, "model_rows": len(rows)}

    @staticmethod
    def _entry(
        predictor, texts, labels, index, prepared: PreparedText, terms, exact, coalition_rows, full, values
    ) -> dict:
        label_names = list(predictor.labels)
        f_x = values[coalition_rows[full]]
        base = values[coalition_rows[0]]
        phi = np.zeros((prepared.n, len(label_names)))
        if terms:
            tokens = np.fromiter((t for t, _, _ in terms), dtype=np.int64, count=len(terms))
            weights = np.fromiter((w for _, _, w in terms), dtype=np.float64, count=len(terms))
            with_rows = np.fromiter(
                (coalition_rows[c | (1 << t)] for t, c, _ in terms), dtype=np.int64, count=len(terms)
            )
            without_rows = np.fromiter((coalition_rows[c] for _, c, _ in terms), dtype=np.int64, count=len(terms))
            np.add.at(phi, tokens, weights[:, None] * (values[with_rows] - values[without_rows]))
        additivity = (
            float(np.max(np.abs(phi.sum(axis=0) + base - f_x))) if prepared.n else float(np.max(np.abs(base - f_x)))
        )
        predicted = label_names[int(np.argmax(f_x))]
        return {
            "index": index,
            "text": str(texts[index]),
            "truncated": prepared.truncated,
            "tokens": [{"text": prepared.text[s:e], "start": s, "end": e} for s, e in prepared.spans],
            "predicted_label": predicted,
            "probabilities": {label: float(p) for label, p in zip(label_names, f_x)},
            "base_values": {label: float(b) for label, b in zip(label_names, base)},
            "values": {label: [float(v) for v in phi[:, k]] for k, label in enumerate(label_names)},
            "additivity_error": additivity,
            "exact": exact,
            "evaluations": len(coalition_rows),
            "true_label": None if labels is None else str(labels[index]),
        }

    def combine(self, predictor, texts, labels, chunk_results: list[dict], params: dict) -> dict:
        results = super().combine(predictor, texts, labels, chunk_results, params)
        results["additivity_max_error"] = max((entry["additivity_error"] for entry in results["texts"]), default=0.0)
        return results

    def fidelity(self, predictor, texts, labels, results: dict, params: dict) -> dict:
        scores = super().fidelity(predictor, texts, labels, results, params)
        scores["additivity_max_error"] = max((entry["additivity_error"] for entry in results["texts"]), default=0.0)
        return scores
