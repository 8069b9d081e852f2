"""ERASER comprehensiveness and sufficiency, against a random ranking."""

import pytest

from explanations.explainers import get_explainer
from explanations.fidelity import BINS, FidelityCase, eraser, top_count
from explanations.masking import prepare_text
from tests.explanations.keyword_model import KeywordModel


def test_top_k_percent_keeps_at_least_one_token():
    assert top_count(1, 30) == 1
    assert top_count(50, 30) == 15
    assert top_count(20, 7) == 2


def test_eraser_definitions_on_a_hand_checked_case():
    model = KeywordModel()
    prepared = prepare_text(model, "好差差差差")  # 5 tokens: 1 % … 20 % is one token, 50 % three
    case = FidelityCase(
        index=0, prepared=prepared, groups=[[i] for i in range(5)], ranking=[0, 1, 2, 3, 4], label_index=0
    )
    scores = eraser(model, [case])

    def p(text):
        return model.predict_proba([text])[0, 0]

    full = p("好差差差差")
    assert scores["comprehensiveness"]["1"] == pytest.approx(full - p("差差差差"))
    assert scores["sufficiency"]["1"] == pytest.approx(full - p("好"))
    assert scores["comprehensiveness"]["50"] == pytest.approx(full - p("差差"))
    assert scores["sufficiency"]["50"] == pytest.approx(full - p("好差差"))
    bins = [scores["comprehensiveness"][str(k)] for k in BINS]
    assert scores["comprehensiveness"]["aopc"] == pytest.approx(sum(bins) / len(bins))
    assert set(scores["random_baseline"]) == {"comprehensiveness", "sufficiency"}


def test_shap_report_beats_the_random_baseline():
    model = KeywordModel(mask_text="#")
    texts = [
        "这家酒店的服务很好，但是房间太差了！",
        "我不喜欢这个颜色，要求退款。",
        "很好，很喜欢，推荐！",
        "质量很差，不好用，退款",
    ]
    explainer = get_explainer("shap")
    params = explainer.validate_params({})
    parts = [explainer.run_chunk(model, texts, None, c, params) for c in explainer.plan_chunks(len(texts), params)]
    results = explainer.combine(model, texts, None, parts, params)
    fidelity = explainer.fidelity(model, texts, None, results, params)
    assert fidelity["texts"] == 4
    assert fidelity["comprehensiveness"]["aopc"] > fidelity["random_baseline"]["comprehensiveness"]["aopc"]
    assert fidelity["sufficiency"]["aopc"] < fidelity["random_baseline"]["sufficiency"]["aopc"]
    assert fidelity["additivity_max_error"] <= 1e-6
