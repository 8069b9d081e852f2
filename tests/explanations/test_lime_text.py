"""Glassbox LIME: Chinese word or token features, seeded, R² stored."""

import pytest

from explanations.explainers import get_explainer
from tests.explanations.keyword_model import KeywordModel

TEXTS = ["这家酒店的服务很好，但是房间太差了！", "我不喜欢这个颜色，要求退款。", "很好"]


def explain(predictor, texts, **params):
    explainer = get_explainer("lime")
    params = explainer.validate_params(params)
    parts = [
        explainer.run_chunk(predictor, texts, None, chunk, params)
        for chunk in explainer.plan_chunks(len(texts), params)
    ]
    results = explainer.combine(predictor, texts, None, parts, params)
    return results, explainer.fidelity(predictor, texts, None, results, params)


def test_same_seed_same_explanation_whatever_the_chunking():
    model = KeywordModel(mask_text="#")
    first, _ = explain(model, TEXTS, num_samples=300, seed=3, chunk_size=1)
    second, _ = explain(model, TEXTS, num_samples=300, seed=3, chunk_size=10)
    assert first["texts"] == second["texts"]
    other, _ = explain(model, TEXTS, num_samples=300, seed=4)
    assert other["texts"][0]["values"] != first["texts"][0]["values"]


def test_word_features_are_jieba_words_with_spans():
    model = KeywordModel()
    results, _ = explain(model, TEXTS, num_samples=200)
    tokens = [t["text"] for t in results["texts"][0]["tokens"]]
    assert "酒店" in tokens and "服务" in tokens and "房间" in tokens
    for t in results["texts"][0]["tokens"]:
        assert TEXTS[0][t["start"] : t["end"]] == t["text"]


def test_char_features_value_every_character():
    model = KeywordModel()
    results, _ = explain(model, TEXTS, num_samples=200, unit="char")
    entry = results["texts"][1]
    assert [t["text"] for t in entry["tokens"]] == list(TEXTS[1])
    assert len(entry["values"]["positive"]) == len(TEXTS[1])


def test_surrogate_r2_is_stored_and_keywords_get_the_weight():
    model = KeywordModel()
    results, fidelity = explain(model, TEXTS, num_samples=1000)
    entry = results["texts"][0]
    assert 0.0 < entry["r2"] <= 1.0
    assert fidelity["r2_mean"] == pytest.approx(sum(e["r2"] for e in results["texts"]) / 3)
    values = dict(zip((t["text"] for t in entry["tokens"]), entry["values"]["positive"]))
    assert values["好"] > 0 > values["太差"]
    assert fidelity["comprehensiveness"]["aopc"] > fidelity["random_baseline"]["comprehensiveness"]["aopc"]
