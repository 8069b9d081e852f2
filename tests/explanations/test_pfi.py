"""Permutation importance finds the word a model depends on."""

import random

import pytest
import skops.io
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from explanations.explainers import get_explainer
from glassbox.errors import InvalidInput
from registry.predictors import load_predictor

FILLER = [
    "我们",
    "今天",
    "商品",
    "快递",
    "客服",
    "质量",
    "价格",
    "包装",
    "颜色",
    "尺寸",
    "朋友",
    "已经",
    "收到",
    "一个",
]


def synthetic(n, seed):
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        words = rng.sample(FILLER, rng.randint(3, 6))
        planted = rng.random() < 0.5
        if planted:
            words.insert(rng.randint(0, len(words)), "退款")
        texts.append("".join(words) + "。")
        labels.append("refund" if planted else "other")
    return texts, labels


@pytest.fixture(scope="module")
def refund_model(tmp_path_factory):
    texts, labels = synthetic(400, seed=1)
    pipeline = Pipeline(
        [
            ("tfidf", TfidfVectorizer(analyzer="char", ngram_range=(1, 2))),
            ("clf", LogisticRegression(C=10, max_iter=1000)),
        ]
    )
    pipeline.fit(texts, labels)
    path = tmp_path_factory.mktemp("pfi") / "refund.skops"
    skops.io.dump(pipeline, path)
    return load_predictor(path, "sklearn")


def run(predictor, texts, labels, **params):
    explainer = get_explainer("pfi")
    params = explainer.validate_params(params)
    parts = [
        explainer.run_chunk(predictor, texts, labels, chunk, params)
        for chunk in explainer.plan_chunks(len(texts), params)
    ]
    results = explainer.combine(predictor, texts, labels, parts, params)
    return results, explainer.fidelity(predictor, texts, labels, results, params)


def test_pfi_finds_the_planted_keyword(refund_model):
    texts, labels = synthetic(150, seed=2)
    results, fidelity = run(refund_model, texts, labels, top_k=10, repeats=5)
    assert results["baseline"]["accuracy"] > 0.95
    top = results["features"][0]
    assert top["token"] == "退款"
    assert top["accuracy_drop_mean"] > 0.3 and top["macro_f1_drop_mean"] > 0.3
    assert top["accuracy_drop_std"] > 0  # bootstrap resamples differ
    assert top["accuracy_drop_positive_repeats"] == 5  # every repeat saw accuracy fall
    assert all(abs(row["accuracy_drop_mean"]) < 0.1 for row in results["features"][1:])
    assert len(results["features"]) == 10 and results["repeats"] == 5 and results["unit"] == "word"
    assert fidelity["comprehensiveness"]["aopc"] >= fidelity["random_baseline"]["comprehensiveness"]["aopc"]


def test_pfi_with_char_units_ranks_its_characters_first(refund_model):
    texts, labels = synthetic(150, seed=3)
    results, _ = run(refund_model, texts, labels, top_k=20, unit="char", repeats=3)
    assert {row["token"] for row in results["features"][:2]} == {"退", "款"}


def test_pfi_is_deterministic_for_a_seed(refund_model):
    texts, labels = synthetic(60, seed=4)
    first, _ = run(refund_model, texts, labels, top_k=6, chunk_size=1, seed=9)
    second, _ = run(refund_model, texts, labels, top_k=6, chunk_size=6, seed=9)
    assert first == second


def test_pfi_refuses_unlabelled_data_and_unknown_labels(refund_model):
    explainer = get_explainer("pfi")
    with pytest.raises(InvalidInput, match="labels"):
        explainer.check_inputs(["退款"], None)
    params = explainer.validate_params({})
    with pytest.raises(InvalidInput, match="labels"):
        explainer.run_chunk(refund_model, ["退款"], None, explainer.plan_chunks(1, params)[0], params)
    with pytest.raises(InvalidInput, match="does not know: spam"):
        explainer.check_inputs(["退款"], ["spam"], refund_model.labels)


def test_pfi_includes_the_shap_summary_when_a_shap_report_is_given(refund_model):
    texts, labels = synthetic(40, seed=5)
    shap = get_explainer("shap")
    shap_params = shap.validate_params({"max_evals": 100})
    parts = [
        shap.run_chunk(refund_model, texts, labels, c, shap_params) for c in shap.plan_chunks(len(texts), shap_params)
    ]
    shap_results = shap.combine(refund_model, texts, labels, parts, shap_params)
    results, _ = run(refund_model, texts, labels, top_k=5, shap_results=shap_results)
    summary = results["shap_summary"]["refund"]
    assert summary[0]["token"] in {"退", "款"}
    assert {"token", "mean_abs", "count"} <= set(summary[0])
