"""Glassbox SHAP: Owen values over clauses → jieba words → tokens."""

import io
import itertools
import math
import zipfile

import numpy as np
import pytest

from explanations.explainers import get_explainer
from explanations.explainers.shap_owen import ESTIMATORS, small_sample_factor
from explanations.hierarchy import build_tree
from explanations.masking import prepare_text
from registry.predictors import load_predictor
from tests.explanations.keyword_model import KeywordModel

SHORT_TEXTS = ["不好，很好！", "服务很差。不喜欢", "很好,不差", "喜欢！退款？不好"]


def explain(predictor, texts, **params):
    explainer = get_explainer("shap")
    params = explainer.validate_params(params)
    parts = [
        explainer.run_chunk(predictor, texts, None, chunk, params)
        for chunk in explainer.plan_chunks(len(texts), params)
    ]
    return explainer.combine(predictor, texts, None, parts, params)


def consistent_orders(node):
    """Every token order in which each node's tokens are contiguous (the
    orders the Owen value averages over), enumerated naively."""
    if isinstance(node, int):
        yield [node]
        return
    for perm in itertools.permutations(node):
        for parts in itertools.product(*(list(consistent_orders(child)) for child in perm)):
            yield [token for part in parts for token in part]


def brute_force_owen(predictor, text):
    prepared = prepare_text(predictor, text)
    tree = build_tree(prepared.text, prepared.spans)
    cache = {}

    def v(present):
        key = frozenset(present)
        if key not in cache:
            hidden = set(range(prepared.n)) - key
            cache[key] = predictor.predict_proba([prepared.render(hidden)])[0]
        return cache[key]

    orders = list(consistent_orders(tree))
    phi = np.zeros((prepared.n, len(predictor.labels)))
    for order in orders:
        present = set()
        for token in order:
            before = v(present)
            present.add(token)
            phi[token] += v(present) - before
    return phi / len(orders), tree


@pytest.mark.parametrize("mask_text", ["", "#"])
def test_full_budget_equals_brute_force_owen_values(mask_text):
    model = KeywordModel(mask_text=mask_text)
    results = explain(model, SHORT_TEXTS, max_evals=100_000)
    for entry, text in zip(results["texts"], SHORT_TEXTS):
        expected, tree = brute_force_owen(model, text)
        assert isinstance(tree, list) and any(isinstance(child, list) for child in tree)  # a real hierarchy
        assert entry["exact"] is True
        for k, label in enumerate(model.labels):
            assert np.allclose(entry["values"][label], expected[:, k], atol=1e-6, rtol=0)


def test_exact_values_differ_from_flat_shapley_so_the_hierarchy_matters():
    model = KeywordModel()
    text = "不好，很好！"
    entry = explain(model, [text], max_evals=100_000)["texts"][0]
    prepared = prepare_text(model, text)
    n = prepared.n
    flat = np.zeros(n)
    orders = list(itertools.permutations(range(n)))
    for order in orders:
        present = set()
        for token in order:
            before = model.predict_proba([prepared.render(set(range(n)) - present)])[0, 1]
            present.add(token)
            flat[token] += model.predict_proba([prepared.render(set(range(n)) - present)])[0, 1] - before
    assert not np.allclose(entry["values"]["positive"], flat / len(orders), atol=1e-6)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_additivity_holds_exactly_and_at_a_budget(estimator):
    model = KeywordModel(mask_text="#")
    long_text = "这家酒店的服务很好，但是房间太差了！我不喜欢，要求退款。前台说不好办，最后还是很好地解决了。" * 2
    for max_evals in (100_000, 500, 40):
        results = explain(model, SHORT_TEXTS + [long_text], max_evals=max_evals, estimator=estimator)
        for entry in results["texts"]:
            for label in model.labels:
                total = sum(entry["values"][label]) + entry["base_values"][label]
                assert abs(total - entry["probabilities"][label]) <= 1e-6
            assert entry["additivity_error"] <= 1e-6
        assert results["additivity_max_error"] <= 1e-6


def test_budget_is_respected_and_every_token_is_valued():
    model = KeywordModel(mask_text="#")
    text = "服务很好，不喜欢这个颜色，但是质量不差，快递也很快，总体来说还是很好的，下次还会再来买，推荐大家购买。" * 2
    entry = explain(model, [text])["texts"][0]  # default budget: 500
    assert entry["exact"] is False
    assert entry["evaluations"] <= 500
    assert len(entry["values"]["positive"]) == len(entry["tokens"]) == len(text)


def test_text_over_the_model_limit_is_truncated_and_flagged():
    model = KeywordModel(max_tokens=5)
    results = explain(model, ["很好很好很好很好", "很好"])
    first, second = results["texts"]
    assert first["truncated"] is True and len(first["tokens"]) == 5
    assert first["text"] == "很好很好很好很好"  # the stored text is the original one
    assert second["truncated"] is False
    assert results["truncated_count"] == 1


def test_results_do_not_depend_on_chunking_and_reruns_are_identical():
    model = KeywordModel(mask_text="#")
    texts = SHORT_TEXTS + ["这家酒店的服务很好，但是房间太差了！我不喜欢，要求退款。" * 3]
    small = explain(model, texts, chunk_size=1, max_evals=60)
    large = explain(model, texts, chunk_size=25, max_evals=60)
    again = explain(model, texts, chunk_size=25, max_evals=60)
    assert small["texts"] == large["texts"] == again["texts"]


def test_model_calls_are_full_batches_shared_across_texts():
    batches = []

    class RecordingModel(KeywordModel):
        def predict_proba(self, texts, batch_size=64):
            batches.append(len(texts))
            return super().predict_proba(texts, batch_size)

    model = RecordingModel(mask_text="#")
    texts = [f"{'很好，' * k}不喜欢{'差' * k}" for k in range(1, 21)]
    explainer = get_explainer("shap")
    # tolerance 0: one sampling round (an adaptive report predicts once per round).
    params = explainer.validate_params({"batch_size": 64, "tolerance": 0})
    result = explainer.run_chunk(model, texts, None, {"start": 0, "stop": 20}, params)
    assert sum(batches) == result["model_rows"]
    # Every batch but the last is full, so batches run across text boundaries
    # (one text's rows are not a multiple of 64).
    assert batches[:-1] == [64] * (len(batches) - 1)
    assert len(batches) == -(-result["model_rows"] // 64)


def test_global_summary_ranks_tokens_by_mean_absolute_value():
    model = KeywordModel()
    results = explain(model, SHORT_TEXTS, max_evals=100_000)
    top = results["global"]["positive"]
    assert top[0]["mean_abs"] >= top[-1]["mean_abs"]
    assert {"token", "mean_abs", "mean", "count"} <= set(top[0])
    assert top[0]["token"] in {"好", "差", "喜", "欢", "不"}


@pytest.fixture(scope="module")
def quick_bert(demo_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    with zipfile.ZipFile(io.BytesIO(demo_models["bert_zip"].read_bytes())) as archive:
        archive.extractall(folder)
    return load_predictor(folder, "transformers")


def test_char_bert_gives_every_character_of_a_100_character_text_its_own_value(quick_bert):
    text = (
        "这家酒店的位置很好，交通方便，服务态度也不错！但是房间有点小，隔音很差，晚上睡不好。早餐种类少，价格偏贵；总体来说还可以，下次可能还会再来住"
    )[:100]
    text = text + "好" * (100 - len(text))
    results = explain(quick_bert, [text, "很好，不错。"], max_evals=500)
    entry, short = results["texts"]
    assert len(entry["tokens"]) == 100
    for label in quick_bert.labels:
        assert len(set(entry["values"][label])) == 100
    assert entry["evaluations"] <= 500
    assert results["additivity_max_error"] <= 1e-6
    assert short["exact"] is True
    assert entry["predicted_label"] in quick_bert.labels


def test_char_bert_exact_values_match_brute_force(quick_bert):
    text = "很好，不错。"
    entry = explain(quick_bert, [text], max_evals=100_000)["texts"][0]
    expected, _ = brute_force_owen(quick_bert, text)
    assert np.allclose(entry["values"]["positive"], expected[:, 1], atol=1e-6, rtol=0)


def test_progress_is_reported_between_zero_and_one():
    model = KeywordModel(mask_text="#")
    explainer = get_explainer("shap")
    params = explainer.validate_params({})
    seen = []
    explainer.run_chunk(model, SHORT_TEXTS, None, {"start": 0, "stop": 4}, params, progress=seen.append)
    assert seen and all(0.0 <= f <= 1.0 for f in seen) and seen == sorted(seen) and seen[-1] == 1.0


def test_exact_values_have_zero_standard_errors_and_report_their_evaluations():
    model = KeywordModel()
    for entry in explain(model, SHORT_TEXTS, max_evals=100_000)["texts"]:
        assert entry["exact"] is True and entry["orders"] == 0
        assert all(error == 0.0 for errors in entry["std_errors"].values() for error in errors)
        assert set(entry["std_errors"]) == set(entry["values"]) and 0 < entry["evaluations"] <= 100_000


UNANIMITY_TEXT = "甲，乙，丙，丁，戊，己，庚，辛，"  # eight clauses of a character and a comma


class UnanimityModel(KeywordModel):
    """v(S) = 1 when 甲, 乙 and 丙 are all present, else 0. Every clause is one
    character and a comma, so the Owen value is the Shapley value of the three
    clauses: 1/3 each, 0 for the rest. In a random order 甲 contributes 1 when its
    clause comes last of the three (X ~ Bernoulli(1/3)); in the reversed order
    when it came first (Y), never both: Var X = 2/9, Cov(X, Y) = −1/9, so the
    mean of K orders in antithetic pairs has variance (2/9 − 1/9)/K = 1/(9K)."""

    def predict_proba(self, texts, batch_size=64):
        positive = np.array([float(all(ch in str(t) for ch in "甲乙丙")) for t in texts])
        return np.stack([1.0 - positive, positive], axis=1).reshape(len(texts), 2)


def test_standard_error_matches_the_known_sampling_variance_of_a_unanimity_game():
    model = UnanimityModel(mask_text="#")
    orders = 40
    n = len(UNANIMITY_TEXT)
    # 200 copies of the text: each is sampled with its own seed, so they are 200 independent estimates.
    results = explain(
        model, [UNANIMITY_TEXT] * 200, max_evals=2 + orders * (n - 1), tolerance=0, estimator="antithetic"
    )
    first = np.array([entry["values"]["positive"][0] for entry in results["texts"]])
    errors = np.array([entry["std_errors"]["positive"][0] for entry in results["texts"]])
    assert all(entry["exact"] is False and entry["orders"] == orders for entry in results["texts"])
    expected_sd = math.sqrt(1 / (9 * orders))
    assert abs(first.mean() - 1 / 3) < 3 * expected_sd / math.sqrt(200)
    assert abs(first.std(ddof=1) / expected_sd - 1) < 0.15  # the estimator's spread is the one derived
    reported = errors / small_sample_factor(orders)  # the t widening for 40 orders taken back out
    assert abs(np.sqrt(np.mean(reported**2)) / expected_sd - 1) < 0.15  # and the standard error says so
    coverage = np.mean(np.abs(first - 1 / 3) <= 1.96 * errors)
    assert 0.88 <= coverage <= 0.995
    for entry in results["texts"]:
        # Tokens outside the unanimity (the commas, 丁…辛) are null players: exactly 0 with no doubt.
        assert entry["values"]["positive"][1] == 0.0 and entry["std_errors"]["positive"][1] == 0.0
        assert entry["values"]["positive"][6] == 0.0 and entry["std_errors"]["positive"][6] == 0.0
        assert abs(sum(entry["values"]["positive"]) - 1.0) <= 1e-9


@pytest.mark.parametrize("estimator", ESTIMATORS[1:])
def test_standard_errors_of_every_sampler_cover_the_unanimity_values(estimator):
    model = UnanimityModel(mask_text="#")
    results = explain(model, [UNANIMITY_TEXT] * 60, max_evals=2 + 12 * 15, tolerance=0, estimator=estimator)
    covered = [
        abs(entry["values"]["positive"][k] - 1 / 3) <= 1.96 * entry["std_errors"]["positive"][k]
        for entry in results["texts"]
        for k in (0, 2, 4)
    ]
    assert np.mean(covered) >= 0.85


LONG_REVIEW = "这家酒店的服务很好，但是房间太差了！我不喜欢，要求退款。前台说不好办，最后还是很好地解决了。"


@pytest.mark.parametrize("estimator", ["antithetic", "cv-stratified"])
def test_adaptive_budget_stops_early_on_an_easy_text_and_uses_the_ceiling_at_tolerance_zero(estimator):
    model = KeywordModel(mask_text="#")
    easy = "这个东西我们昨天已经收到了，包装也还可以，价格很好。"  # one keyword pair in 26 tokens
    hard = LONG_REVIEW * 2
    loose = explain(model, [easy, hard], max_evals=2000, tolerance=0.02, estimator=estimator)["texts"]
    full = explain(model, [easy, hard], max_evals=2000, tolerance=0, estimator=estimator)["texts"]
    assert loose[0]["exact"] is False
    assert loose[0]["evaluations"] < full[0]["evaluations"] / 2  # stopped long before the ceiling
    assert max(loose[0]["std_errors"]["positive"]) <= 0.02  # because every standard error was below tolerance
    for entry in full:
        n = len(entry["tokens"])
        assert entry["evaluations"] <= 2000
        if estimator == "antithetic":
            # As before issue 12: (max_evals − 2) // (n − 1) orders.
            assert entry["orders"] == (2000 - 2) // (n - 1)
        else:
            # Orders until the next one would pass the ceiling (at most n − 1 new coalitions each).
            assert entry["evaluations"] > 2000 - (n - 1)
    assert loose[1]["evaluations"] <= 2000


def test_same_seed_gives_the_same_values_and_another_seed_other_ones():
    model = KeywordModel(mask_text="#")
    texts = [LONG_REVIEW, LONG_REVIEW * 2]
    first = explain(model, texts, max_evals=300, seed=3)["texts"]
    assert first == explain(model, texts, max_evals=300, seed=3)["texts"]
    other = explain(model, texts, max_evals=300, seed=4)["texts"]
    assert all(entry["exact"] is False for entry in first)
    assert first[1]["values"] != other[1]["values"]


def test_tolerance_and_estimator_are_validated():
    explainer = get_explainer("shap")
    assert explainer.validate_params({})["tolerance"] > 0
    for bad in ({"tolerance": -0.1}, {"tolerance": "small"}, {"estimator": "magic"}):
        with pytest.raises(Exception, match="tolerance|estimator"):
            explainer.validate_params(bad)
