"""SHAP as Owen values over the Chinese hierarchy clauses → jieba words → model tokens.

Implemented directly rather than through shap.PartitionExplainer: shap's
partition tree is binary and knows only ASCII punctuation, and at a budget it
leaves whole subtrees unexpanded, so their tokens share one value. Here:

* exact: when every coalition the Owen formula needs fits in ``max_evals``,
  the values are the Owen values of the tree (tested against a brute force),
  with standard error 0;
* at a budget: the Owen value is the mean marginal contribution over orders
  in which every node's tokens are contiguous (hierarchical orders). Each
  order gives every token its own marginal contribution, and one order's
  contributions telescope to f(x) − f(all masked), so additivity holds to
  rounding error whatever is averaged, as long as every order's terms are.

Estimators at a budget (``estimator``; measured by bench/fidelity.py against
converged values, figures in the README):

* ``antithetic`` (the default) — the estimator before issue 12: random
  hierarchical orders, each followed by its reverse (antithetic pairs; Owen
  1977 for the order form of the value, Mitchell et al. 2022, JMLR 23, for
  antithetic orders). At tolerance 0 its values are those of before.
* ``stratified`` — blocks of an order, its half-rotation at every node and
  both reverses (stratified positions; Castro et al. 2017, Comput. Oper.
  Res. 82; Maleki et al. 2013, arXiv:1306.4265). See OrderSampler.
* ``control-variate`` — regression-adjusted Monte Carlo (Witter, Musco et
  al. 2025, "Regression-adjusted Monte Carlo estimators for Shapley values
  and probabilistic values"): a surrogate g(S) = σ(a + Σ_{i∈S} β_i) is fitted
  by least squares on the evaluated prefixes (the regression view of SHAP:
  KernelSHAP, Lundberg & Lee 2017; Leverage SHAP, Musco & Witter 2025), its
  Owen values are computed without model calls, and the orders estimate only
  the model's difference from it; cross-fitted, with the coefficient of the
  control variate estimated from the data so that a useless surrogate costs
  nothing.
* ``cv-stratified`` — both.

Measured (bench/fidelity.py, 4 texts of 50–80 characters and 2 of 104–110
tokens on the demo BERT, reference 5,000 evaluations): none of the three
beat the antithetic sampler on rank agreement. At 500 evaluations, Spearman
mean 0.970 / 0.920 / 0.923 / 0.920 (antithetic / control-variate /
stratified / both) on the short texts, 0.983 / 0.990 / 0.980 / 0.978 on the
longer ones. The control variate lowers the relative L2 error where the
surrogate fits (0.52 → 0.35 short, 0.33 → 0.22 longer) but costs rank
agreement on short texts; stratification by half-rotations leaves only one
independent random order per four and was the least stable (mean relative
L2 1.1 over the two longer texts in one of its runs, 0.49 in another). The
texts are few and the reference had 5,000 evaluations, so differences of a
few hundredths are within noise. So the default stays antithetic; the others remain
selectable and are benchmarked by ``bench/fidelity.py --candidates``.

Considered and not built: a KernelSHAP/Leverage-SHAP regression on the
tokens directly estimates *Shapley* values, not Owen values over the
hierarchy (their weighted least-squares form has no Owen counterpart that
we know of), and doing it level by level spreads the budget over every
clause and word; exact Owen values on the upper levels need all 2^(clauses)
coalitions for every token's inner sums, more than a 500-evaluation budget
holds on long texts.

Standard errors come from the spread of the per-order terms (blocks of
dependent orders accounted for by a pooled design effect, and widened by
Student's t for few orders), so value ± 1.96·SE is a 95 % interval. With a
``tolerance`` > 0, orders are added in rounds and a text stops once every
standard error is below it; ``max_evals`` is the ceiling, counted in
distinct coalitions.

The coalitions of all texts of a chunk go into shared predict_proba batches,
one call per round.
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

# Sampling estimators (see the module docstring for what each is and how it measured).
ESTIMATORS = ("antithetic", "stratified", "control-variate", "cv-stratified")
DEFAULT_ESTIMATOR = "antithetic"
STRATIFIED_ESTIMATORS = frozenset({"stratified", "cv-stratified"})
CONTROL_VARIATE_ESTIMATORS = frozenset({"control-variate", "cv-stratified"})
# Adaptive budget: a text stops once every standard error is below `tolerance`.
DEFAULT_TOLERANCE = 0.05
MIN_ORDERS = 2  # a standard error needs two orders
MIN_ORDERS_TO_STOP = 3  # a spread of two terms is too unsteady to stop on
FIRST_ROUND_ORDERS = 4
# The surrogate's Owen values are averaged over this many orders (no model calls).
MC_TOKEN_ORDERS = 100_000  # orders × tokens
MC_ORDERS_CAP = 2000
SURROGATE_RIDGE = 0.1
CV_FOLDS = 4  # cross-fitting folds of the control variate's surrogate
LOGIT_CLIP = 1e-6


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


def _node_paths(tree: Node, n_tokens: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Each token's path of node ids (root's child first, the token last),
    padded with the id ``count`` (a node whose sort key is always 0), the
    parent id of every node, and ``count``."""
    paths: list[list[int]] = [[] for _ in range(n_tokens)]
    parents: list[int] = [0]  # node 0 is the root

    def walk(node: Node, path: list[int], parent: int) -> None:
        node_id = len(parents)
        parents.append(parent)
        path = path + [node_id]
        if isinstance(node, int):
            paths[node] = path
            return
        for child in node:
            walk(child, path, node_id)

    if isinstance(tree, int):
        walk(tree, [], 0)
    else:
        for child in tree:
            walk(child, [], 0)
    count = len(parents)
    depth = max(len(path) for path in paths)
    matrix = np.full((n_tokens, depth), count, dtype=np.int64)
    for token, path in enumerate(paths):
        matrix[token, : len(path)] = path
    return matrix, np.asarray(parents + [0], dtype=np.int64), count


class OrderSampler:
    """Hierarchical token orders (every node's tokens contiguous), drawn many
    at a time with numpy: each node gets a sort key, and a stable sort per
    level, innermost first, orders the tokens lexicographically by their path.

    Orders come in blocks. Plain: a random order and its reverse (antithetic:
    a token early in one is as late in the other). ``stratified``: a random
    order, the same order with every node's children rotated by half (the
    first half of the siblings moves behind the second), and both reverses, so
    that within a block each clause and word takes an early, a middle and a
    late position instead of wherever chance puts it (stratified positions,
    Castro et al. 2017, "Improving polynomial estimation of the Shapley value
    by stratified random sampling", Comput. Oper. Res. 82; the quasi-Monte
    Carlo orders of Mitchell et al. 2022, "Sampling permutations for Shapley
    value estimation", JMLR 23). Each block starts from a fresh random order:
    rotations of one order alone would only ever visit 2·m of the m! orders.
    """

    def __init__(self, tree: Node, n_tokens: int, rng: np.random.Generator, *, stratified: bool) -> None:
        self.paths, self.parents, self.count = _node_paths(tree, n_tokens)
        self.n = n_tokens
        self.rng = rng
        self.stratified = stratified
        self.block = 4 if stratified else 2
        self.queue: list[np.ndarray] = []

    def draw(self, k: int) -> np.ndarray:
        """The next k orders of the sequence (which does not depend on how it is cut into rounds)."""
        missing = k - len(self.queue)
        if missing > 0:
            blocks = -(-missing // self.block)
            keys = self.rng.random((blocks, self.count + 1))
            if self.stratified:
                keys = np.concatenate([keys, np.mod(keys + 0.5, 1.0)], axis=1).reshape(2 * blocks, -1)
            for order in self.sort(keys):
                self.queue += [order, order[::-1].copy()]
        taken, self.queue = self.queue[:k], self.queue[k:]
        return np.asarray(taken, dtype=np.int64).reshape(k, self.n)

    def sort(self, keys: np.ndarray) -> np.ndarray:
        keys = keys.copy()
        keys[:, self.count] = 0.0
        per_token = keys[:, self.paths]  # orders × tokens × depth
        order = np.broadcast_to(np.arange(self.n), (keys.shape[0], self.n)).copy()
        for level in range(self.paths.shape[1] - 1, -1, -1):
            level_keys = np.take_along_axis(per_token[:, :, level], order, axis=1)
            order = np.take_along_axis(order, np.argsort(level_keys, axis=1, kind="stable"), axis=1)
        return order


def marginals_by_token(
    orders: np.ndarray, prefix_values: np.ndarray, positions: np.ndarray | None = None
) -> np.ndarray:
    """orders (K × n), prefix values (K × (n+1) × L) → each token's marginal
    contribution in each order (K × n × L). ``positions``: argsort(orders), if known."""
    steps = np.diff(prefix_values, axis=1)
    if positions is None:
        positions = np.argsort(orders, axis=1)
    return steps[np.arange(orders.shape[0])[:, None], positions]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class ChainGram:
    """Normal equations of the least-squares fit logit v(S) ≈ a + Σ_{i∈S} β_i
    over the prefixes of each order, kept per order so that any order can be
    left out. For one order's n+1 nested prefixes the sums have a closed form:
    token i is in the n − pos_i prefixes after it, tokens i and j together in
    n − max(pos_i, pos_j)."""

    def __init__(self, n_tokens: int, n_labels: int) -> None:
        self.n = n_tokens
        self.gram = np.zeros((n_tokens + 1, n_tokens + 1))
        self.rhs = np.zeros((n_tokens + 1, n_labels))
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, order: np.ndarray, prefix_values: np.ndarray) -> None:
        n = self.n
        position = np.argsort(order)
        y = _logit(prefix_values)  # (n+1) × L
        gram = np.empty((n + 1, n + 1))
        gram[0, 0] = n + 1
        gram[0, 1:] = gram[1:, 0] = n - position
        gram[1:, 1:] = n - np.maximum.outer(position, position)
        suffix = np.cumsum(y[::-1], axis=0)[::-1]  # suffix[t] = Σ_{u ≥ t} y[u]
        rhs = np.empty((n + 1, y.shape[1]))
        rhs[0] = suffix[0]
        rhs[1:] = suffix[position + 1]
        self.gram += gram
        self.rhs += rhs
        self.parts.append((gram, rhs))

    def solve_without(self, left_out) -> np.ndarray:
        gram, rhs = self.gram.copy(), self.rhs.copy()
        for k in left_out:
            gram -= self.parts[k][0]
            rhs -= self.parts[k][1]
        gram = gram + np.diag(np.r_[0.0, np.full(self.n, SURROGATE_RIDGE)])
        return np.linalg.solve(gram, rhs)  # (n+1) × L: intercept, then β


def surrogate_marginals(theta: np.ndarray, orders: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
    """Each token's marginal contribution to g(S) = σ(a + Σ_{i∈S} β_i) along each order (K × n × L)."""
    intercept, beta = theta[0], theta[1:]
    logits = np.empty((orders.shape[0], orders.shape[1] + 1, theta.shape[1]))
    logits[:, 0] = intercept
    np.cumsum(beta[orders], axis=1, out=logits[:, 1:])
    logits[:, 1:] += intercept
    return marginals_by_token(orders, _sigmoid(logits), positions)


def estimate_from_orders(
    estimator: str,
    orders: np.ndarray,
    prefix_values: np.ndarray,
    gram: ChainGram | None,
    mc_orders: tuple | None,
    block: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Values (n × L) and their standard errors from K sampled orders.

    Plain estimators: the mean marginal contribution over orders. Control
    variate (regression-adjusted Monte Carlo): per order k, Owen(g) +
    (marginals of v − marginals of g) along order k, where g is the surrogate
    fitted without order k's fold (cross-fitting keeps each term unbiased;
    folds are whole antithetic pairs) and Owen(g) comes from ``mc_orders`` (no
    model calls). Every per-order term sums over tokens to f(x) − f(∅), so
    additivity holds for any K.
    """
    marginals = marginals_by_token(orders, prefix_values)
    k = orders.shape[0]
    if estimator in CONTROL_VARIATE_ESTIMATORS and k >= 2:
        blocks = -(-k // block)
        # Folds are whole blocks (orders of one block depend on each other); with one block, single orders.
        fold_of = np.arange(k) // block % min(CV_FOLDS, blocks) if blocks >= 2 else np.arange(k)
        folds = sorted(set(fold_of.tolist()))
        owen_g = np.empty_like(marginals)
        along = np.empty_like(marginals)
        mc_var = np.zeros(marginals.shape[1:])
        for fold in folds:
            members = np.flatnonzero(fold_of == fold)
            theta = gram.solve_without(members)
            mc = surrogate_marginals(theta, *mc_orders)
            owen_g[members] = mc.mean(axis=0)
            mc_var += mc.var(axis=0) / mc.shape[0] * len(members) / k
            along[members] = surrogate_marginals(theta, orders[members])
        # The control variate's coefficient, one per label, pooled over tokens
        # from the within-token spread: near 1 when the surrogate tracks the
        # model, near 0 (plain sampling) when it does not.
        dv = marginals - marginals.mean(axis=0)
        dg = along - along.mean(axis=0)
        denominator = np.sum(dg * dg, axis=(0, 1))
        coefficient = np.where(denominator > 0, np.sum(dv * dg, axis=(0, 1)) / np.maximum(denominator, 1e-300), 0.0)
        coefficient = np.clip(coefficient, 0.0, 1.0)
        terms = marginals + coefficient * (owen_g - along)
        return terms.mean(axis=0), np.sqrt(mean_variance(terms, block) + coefficient**2 * mc_var) * small_sample_factor(
            k
        )
    return marginals.mean(axis=0), np.sqrt(mean_variance(marginals, block)) * small_sample_factor(k)


def mean_variance(terms: np.ndarray, block: int) -> np.ndarray:
    """Variance of the mean of K per-order terms (K × n × L) drawn in blocks
    of ``block`` dependent orders (an order and its reverse; with
    stratification, also their half-rotations): σ²·(K + Σ_b g_b(g_b − 1)·ρ)/K²,
    with σ² each token's spread over the K orders and ρ the correlation of
    two orders of one block, pooled over the text's tokens (one block alone
    gives too few degrees of freedom) — Kish's design effect."""
    k = terms.shape[0]
    if k < 2:
        return np.full(terms.shape[1:], np.nan)
    variance = terms.var(axis=0, ddof=1)
    centred = terms - terms.mean(axis=0)
    within = np.zeros(terms.shape[2])
    pairs = 0
    for start in range(0, k, block):
        group = centred[start : start + block]
        g = group.shape[0]
        if g > 1:
            total = group.sum(axis=0)
            # Σ over ordered pairs a ≠ b of c_a·c_b = (Σ c)² − Σ c².
            within += np.sum(total * total - np.sum(group * group, axis=0), axis=0)
            pairs += g * (g - 1)
    spread = np.sum(variance, axis=0) * max(1, pairs)
    rho = np.where(spread > 0, within / np.maximum(spread, 1e-300), 0.0) if pairs else np.zeros_like(within)
    rho = np.clip(rho, -1.0, 1.0)
    return np.maximum(variance * (k + pairs * rho) / k**2, 0.0)


def small_sample_factor(k: int) -> float:
    """Student's t over the normal 97.5 % quantile for k − 1 degrees of freedom:
    the standard error is widened by it so that value ± 1.96·SE stays a 95 %
    interval when only a few orders were drawn (12.7/1.96 for two orders,
    1.27 for six, 1.05 for thirty)."""
    if k < 2:
        return 1.0
    from scipy.stats import t

    return float(t.ppf(0.975, k - 1) / 1.959963984540054)


def _prefix_masks(order) -> list[int]:
    """The bitmasks of an order's n + 1 prefixes, from none to all tokens."""
    present = 0
    masks = [0]
    for token in order:
        present |= 1 << int(token)
        masks.append(present)
    return masks


class _TextRun:
    """One text's sampling state across rounds."""

    def __init__(self, index: int, prepared: PreparedText, tree: Node, params: dict) -> None:
        self.index = index
        self.prepared = prepared
        self.n = prepared.n
        self.estimator = params["estimator"]
        self.tolerance = float(params["tolerance"])
        self.seed = chunk_seed(params["seed"], index)
        self.rng = np.random.default_rng(self.seed)
        self.full = (1 << self.n) - 1
        self.coalition_rows: dict[int, int] = {}
        self.exact_terms = None
        self.orders = np.zeros((0, max(self.n, 0)), dtype=np.int64)
        self.prefix_masks: list[list[int]] = []
        self.values = self.se = None
        self.done = False
        terms, exact = [], self.n == 0
        if self.n and count_owen_terms(tree) <= min(EXACT_TERMS_FACTOR * params["max_evals"], EXACT_TERMS_CAP):
            candidate = owen_terms(tree)
            coalitions = {c for _, c, _ in candidate} | {c | (1 << t) for t, c, _ in candidate}
            if len(coalitions) <= params["max_evals"]:
                terms, exact = candidate, True
        self.exact = exact
        if exact:
            self.exact_terms = terms
            return
        # Each order costs n − 1 new coalitions (empty and full are shared). Two
        # orders are the floor, even over budget: every value needs a standard error.
        self.max_orders = max(MIN_ORDERS, (params["max_evals"] - 2) // max(1, self.n - 1))
        self.max_evals = params["max_evals"]
        self.planned = {0, self.full}
        self.exhausted = False
        self.legacy_queue: list[list[int]] = []
        if self.estimator == "antithetic":
            self.sampler = None
        else:
            self.sampler = OrderSampler(tree, self.n, self.rng, stratified=self.estimator in STRATIFIED_ESTIMATORS)
        self.tree = tree
        self.mc_orders = None

    def planned_rows(self) -> int:
        """At most how many coalitions this text will need (for progress)."""
        if self.exact:
            return 2 + 2 * len(self.exact_terms)
        return max(self.max_evals, 2 + MIN_ORDERS * max(0, self.n - 1))

    def wanted(self) -> list[int]:
        """Coalitions (bitmasks) this round needs; [] once the text is done."""
        if self.done:
            return []
        if self.exact:
            self.done = True
            terms = self.exact_terms
            return [0, self.full] + [c for _, c, _ in terms] + [c | (1 << t) for t, c, _ in terms]
        have = self.orders.shape[0]
        if self.estimator == "antithetic":
            # The estimator before issue 12: (max_evals − 2) // (n − 1) orders, or fewer
            # when the tolerance is met first.
            if self.tolerance <= 0:
                more = self.max_orders - have
            else:
                more = min(self.max_orders - have, FIRST_ROUND_ORDERS if have == 0 else max(2, have // 2))
            new = self._draw(more)
            self.exhausted = have + more >= self.max_orders
        else:
            if self.tolerance <= 0:
                more = self.max_evals  # as many as the ceiling takes
            elif have == 0:
                more = FIRST_ROUND_ORDERS
            else:
                more = max(2, have // 2)
            new = []
            while len(new) < more:
                order = self.sampler.draw(1)[0]
                masks = _prefix_masks(order)
                fresh = {m for m in masks[1:-1] if m not in self.planned}
                # Orders share coalitions (a clause boundary reached the same way), so the
                # ceiling is counted in distinct coalitions, not in orders.
                if have + len(new) >= MIN_ORDERS and len(self.planned) + len(fresh) > self.max_evals:
                    self.exhausted = True
                    break
                self.planned |= fresh
                new.append(order)
            new = np.asarray(new, dtype=np.int64).reshape(len(new), self.n)
        self.orders = np.concatenate([self.orders, new]) if have else new
        wanted = [0, self.full]
        for order in new:
            masks = _prefix_masks(order)
            self.prefix_masks.append(masks)
            wanted.extend(masks[1:-1])
        return wanted

    def _draw(self, k: int) -> np.ndarray:
        if self.sampler is not None:
            return self.sampler.draw(k)
        # Today's sampler: random orders, each followed by its reverse (antithetic
        # pairs), from the text's generator in the same sequence whatever the rounds.
        while len(self.legacy_queue) < k:
            order = hierarchical_order(self.tree, self.rng)
            self.legacy_queue += [order, order[::-1]]
        taken, self.legacy_queue = self.legacy_queue[:k], self.legacy_queue[k:]
        return np.asarray(taken, dtype=np.int64).reshape(k, self.n)

    def update(self, values: np.ndarray) -> None:
        """Recompute the estimate after a round and decide whether to stop."""
        if self.exact:
            return
        prefix_values = np.stack([values[[self.coalition_rows[m] for m in masks]] for masks in self.prefix_masks])
        gram = mc_orders = None
        if self.estimator in CONTROL_VARIATE_ESTIMATORS:
            gram = ChainGram(self.n, prefix_values.shape[2])
            for order, prefix in zip(self.orders, prefix_values):
                gram.add(order, prefix)
            if self.mc_orders is None:
                # Its own stream, so the sampled orders do not depend on when this runs.
                mc_rng = np.random.default_rng([*self.seed, 1])
                half = max(32, min(MC_ORDERS_CAP, MC_TOKEN_ORDERS // max(1, self.n))) // 2
                plain = OrderSampler(self.tree, self.n, mc_rng, stratified=False).draw(half)
                mc_orders = np.concatenate([plain, plain[:, ::-1]])
                self.mc_orders = (mc_orders, np.argsort(mc_orders, axis=1))
            mc_orders = self.mc_orders
        block = self.sampler.block if self.sampler is not None else 2
        self.values, self.se = estimate_from_orders(self.estimator, self.orders, prefix_values, gram, mc_orders, block)
        have = self.orders.shape[0]
        converged = (
            self.tolerance > 0
            and have >= MIN_ORDERS_TO_STOP
            and bool(np.all(np.nan_to_num(self.se, nan=np.inf) <= self.tolerance))
        )
        self.done = self.exhausted or converged or self.tolerance <= 0


class OwenShapExplainer(LocalExplainer):
    method = "shap"
    PARAMS = {
        "max_evals": Param(int, 500, 10, 100_000, help="ceiling on model evaluations per text"),
        "tolerance": Param(
            float,
            DEFAULT_TOLERANCE,
            0.0,
            1.0,
            help="stop sampling a text once every value's standard error is below this (0: use the whole max_evals)",
        ),
        "estimator": Param(str, DEFAULT_ESTIMATOR, choices=ESTIMATORS, help="how orders are sampled and averaged"),
        "seed": Param(int, 0, 0, 2**31 - 1),
        "chunk_size": Param(int, 25, 1, 1000, help="texts per chunk"),
        "batch_size": Param(int, 128, 1, 4096, help="rows per model forward pass"),
    }

    def rows_per_text(self, params: dict, n_labels: int) -> int:
        return int(params["max_evals"])  # fewer when a short text is computed exactly

    def run_chunk(self, predictor, texts, labels, chunk: dict, params: dict, progress: Progress = None) -> dict:
        params = self.validate_params(params)
        indices = range(int(chunk["start"]), min(len(texts), int(chunk["stop"])))
        runs = []
        for index in indices:
            prepared = prepare_text(predictor, texts[index])
            runs.append(_TextRun(index, prepared, build_tree(prepared.text, prepared.spans), params))
        planned = max(1, sum(run.planned_rows() for run in runs))
        rows: dict[str, int] = {}
        values = np.zeros((0, len(predictor.labels)))
        if progress:
            progress(0.05)
        # Rounds: every text still sampling asks for more orders, and all their
        # coalitions go into shared predict_proba batches.
        active = list(runs)
        while active:
            strings: list[str] = []
            token_counts: list[int] = []
            for run in active:
                for coalition in run.wanted():
                    if coalition not in run.coalition_rows:
                        # Identical strings across texts (e.g. all masked) share a row.
                        string = run.prepared.render_present(coalition)
                        if string not in rows:
                            rows[string] = len(rows)
                            strings.append(string)
                            token_counts.append(run.n)
                        run.coalition_rows[coalition] = rows[string]
            if strings:
                start = 0.05 + 0.9 * min(1.0, (len(rows) - len(strings)) / planned)
                span = (start, max(start, 0.05 + 0.9 * min(1.0, len(rows) / planned)))
                predicted = predict_rows(predictor, strings, token_counts, params["batch_size"], progress, span)
                values = np.concatenate([values, predicted])
            for run in active:
                run.update(values)
            active = [run for run in active if not run.done]

        entries = [self._entry(predictor, texts, labels, run, values) for run in runs]
        if progress:
            progress(1.0)
        return {"texts": entries, "model_rows": len(rows)}

    @staticmethod
    def _entry(predictor, texts, labels, run: _TextRun, values: np.ndarray) -> dict:
        label_names = list(predictor.labels)
        prepared = run.prepared
        f_x = values[run.coalition_rows[run.full]]
        base = values[run.coalition_rows[0]]
        if run.exact:
            phi = np.zeros((prepared.n, len(label_names)))
            terms = run.exact_terms
            if terms:
                rows = run.coalition_rows
                tokens = np.fromiter((t for t, _, _ in terms), dtype=np.int64, count=len(terms))
                weights = np.fromiter((w for _, _, w in terms), dtype=np.float64, count=len(terms))
                with_rows = np.fromiter((rows[c | (1 << t)] for t, c, _ in terms), dtype=np.int64, count=len(terms))
                without_rows = np.fromiter((rows[c] for _, c, _ in terms), dtype=np.int64, count=len(terms))
                np.add.at(phi, tokens, weights[:, None] * (values[with_rows] - values[without_rows]))
            se = np.zeros_like(phi)
        else:
            phi, se = run.values, run.se
        additivity = (
            float(np.max(np.abs(phi.sum(axis=0) + base - f_x))) if prepared.n else float(np.max(np.abs(base - f_x)))
        )
        predicted = label_names[int(np.argmax(f_x))]
        return {
            "index": run.index,
            "text": str(texts[run.index]),
            "truncated": prepared.truncated,
            "tokens": [{"text": prepared.text[s:e], "start": s, "end": e} for s, e in prepared.spans],
            "predicted_label": predicted,
            "probabilities": {label: float(p) for label, p in zip(label_names, f_x)},
            "base_values": {label: float(b) for label, b in zip(label_names, base)},
            "values": {label: [float(v) for v in phi[:, k]] for k, label in enumerate(label_names)},
            "std_errors": {label: [float(v) for v in se[:, k]] for k, label in enumerate(label_names)},
            "additivity_error": additivity,
            "exact": run.exact,
            "evaluations": len(run.coalition_rows),
            "orders": 0 if run.exact else int(run.orders.shape[0]),
            "true_label": None if labels is None else str(labels[run.index]),
        }

    def combine(self, predictor, texts, labels, chunk_results: list[dict], params: dict) -> dict:
        results = super().combine(predictor, texts, labels, chunk_results, params)
        results["additivity_max_error"] = max((entry["additivity_error"] for entry in results["texts"]), default=0.0)
        return results

    def fidelity(self, predictor, texts, labels, results: dict, params: dict) -> dict:
        scores = super().fidelity(predictor, texts, labels, results, params)
        scores["additivity_max_error"] = max((entry["additivity_error"] for entry in results["texts"]), default=0.0)
        return scores
