"""Global importance ranks tokens by their share of the attribution mass,
with a floor on how many texts a token occurs in, bootstrap intervals, a
word view, and the same ranking on every page and export."""

import csv
import io

import pytest
from django.test import Client

from explanations.global_importance import global_importance
from tests.conftest import ModelVersionFactory, api_client_for
from tests.explanations.reporting import make_report, stored_version

LABELS = ("negative", "positive")


def entry(index: int, tokens: list[str], positive_values: list[float], text: str | None = None) -> dict:
    """One text's result with the given tokens (laid end to end) and values toward "positive"."""
    text = text if text is not None else "".join(tokens)
    spans, start = [], 0
    for token in tokens:
        start = text.index(token, start)
        spans.append({"text": token, "start": start, "end": start + len(token)})
        start += len(token)
    return {
        "index": index,
        "text": text,
        "truncated": False,
        "tokens": spans,
        "predicted_label": "positive",
        "probabilities": {"negative": 0.3, "positive": 0.7},
        "base_values": {"negative": 0.5, "positive": 0.5},
        "values": {"positive": positive_values, "negative": [-v for v in positive_values]},
        "additivity_error": 0.0,
        "true_label": None,
    }


def rare_and_frequent_results(n_texts: int = 40) -> dict:
    # "稀" occurs once with a huge value; "好" occurs in every text with a moderate one.
    texts = [entry(0, ["稀", "好", "的"], [0.9, 0.1, 0.01])]
    texts += [entry(i, ["好", "的"], [0.1, 0.01]) for i in range(1, n_texts)]
    return {"texts": texts, "labels": list(LABELS), "global": {}, "truncated_count": 0}


def test_a_frequent_token_outranks_a_rare_one_with_a_large_value():
    importance = global_importance(rare_and_frequent_results(), min_texts=3)
    ranked = importance["labels"]["positive"]
    tokens = [row["token"] for row in ranked["rows"]]
    assert tokens == ["好", "的"]  # 稀 is not ranked at all...
    assert ranked["rare"]["tokens"] == 1  # ...its mass is the rare row
    assert ranked["rare"]["share"] == pytest.approx(100 * 0.9 / (0.9 + 40 * 0.1 + 40 * 0.01))
    top = ranked["rows"][0]
    assert top["texts"] == 40 and top["count"] == 40
    assert top["mean"] == pytest.approx(0.1) and top["mean_abs"] == pytest.approx(0.1)
    # By the old measure (mean |value| per occurrence) 稀 would have come first.
    assert 0.9 > top["mean_abs"]


def test_shares_add_up_to_100_percent_per_label():
    results = rare_and_frequent_results()
    for top in (1, 50):
        importance = global_importance(results, min_texts=3, top=top)
        for ranked in importance["labels"].values():
            total = sum(row["share"] for row in ranked["rows"]) + ranked["rare"]["share"]
            total += ranked["beyond_top"]["share"]
            assert total == pytest.approx(100.0)


def test_min_texts_one_ranks_every_token():
    ranked = global_importance(rare_and_frequent_results(), min_texts=1)["labels"]["positive"]
    assert [row["token"] for row in ranked["rows"]] == ["好", "稀", "的"]
    assert ranked["rare"] == {"tokens": 0, "share": 0.0, "below_texts": 1}


def test_bootstrap_gives_intervals_around_each_share_and_is_seeded():
    results = rare_and_frequent_results()
    first = global_importance(results, seed=3)
    assert first == global_importance(results, seed=3)
    for row in first["labels"]["positive"]["rows"]:
        assert row["share_low"] <= row["share"] <= row["share_high"]
        assert row["rank_unstable"] is False  # two tokens far apart: their order always holds


def test_near_ties_are_marked_unstable():
    # Six tokens of nearly equal weight whose values vary a lot from text to text.
    import random

    rng = random.Random(0)
    tokens = ["甲", "乙", "丙", "丁", "戊", "己"]
    texts = [entry(i, tokens, [rng.uniform(0.0, 0.2) for _ in tokens]) for i in range(12)]
    importance = global_importance({"texts": texts, "labels": list(LABELS)}, min_texts=3)
    assert any(row["rank_unstable"] for row in importance["labels"]["positive"]["rows"])


def test_the_word_view_groups_model_tokens_by_the_hierarchys_words():
    # Character tokens; jieba reads 质量 and 物流 as words.
    text = "质量很好，物流很快"
    chars = [ch for ch in text]
    values = [0.2, 0.1, 0.0, 0.05, 0.0, 0.3, 0.3, 0.0, 0.01]
    texts = [entry(i, chars, values, text=text) for i in range(4)]
    importance = global_importance({"texts": texts, "labels": list(LABELS)}, unit="word", min_texts=3)
    rows = {row["token"]: row for row in importance["labels"]["positive"]["rows"]}
    assert "质量" in rows and "物流" in rows and "质" not in rows
    assert rows["物流"]["mean"] == pytest.approx(0.6)  # a word's value is the sum of its tokens'
    assert rows["质量"]["mean"] == pytest.approx(0.3)
    assert importance["unit"] == "word"


def test_unknown_unit_is_refused():
    with pytest.raises(ValueError):
        global_importance(rare_and_frequent_results(), unit="sentence")


@pytest.fixture
def version(engineer):
    return stored_version(uploader=engineer)


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_report_page_ranks_by_share_and_counts_rare_tokens(engineer, reviewer, version):
    report = make_report(version=version, requested_by=engineer, results=rare_and_frequent_results())
    page = browser(reviewer).get(report.get_absolute_url()).content.decode()
    assert "Share of the attribution mass" in page and "rare (1 in fewer than 3 texts)" in page
    assert "<title>好: 75.5 % [" in page  # 40 x 0.1 of 0.9 + 40 x 0.1 + 40 x 0.01
    words = browser(reviewer).get(report.get_absolute_url() + "?unit=word&min_texts=1").content.decode()
    assert "Top words per class" in words and 'value="1"' in words


def test_a_report_stored_before_the_share_ranking_is_ranked_by_share_at_read_time(engineer, reviewer, version):
    results = rare_and_frequent_results()
    # What older reports stored: the top tokens by mean |value| per occurrence (稀 first).
    results["global"] = {label: [{"token": "稀", "mean_abs": 0.9, "mean": 0.9, "count": 1}] for label in LABELS}
    report = make_report(version=version, requested_by=engineer, results=results)
    page = browser(reviewer).get(report.get_absolute_url()).content.decode()
    chart = page.split('id="global-importance"')[1]
    assert chart.index("<title>好") < chart.index("<title>的") and "<title>稀" not in chart
    report.refresh_from_db()
    assert report.results["global"]["positive"][0]["token"] == "稀"  # stored results untouched


def test_exports_carry_share_texts_mean_and_mean_abs(engineer, version):
    report = make_report(version=version, requested_by=engineer, results=rare_and_frequent_results())
    client = api_client_for(engineer)
    document = client.get(f"/api/v1/explanations/{report.pk}/export.json").json()
    row = document["global_importance"]["labels"]["positive"]["rows"][0]
    assert {"share", "texts", "mean", "mean_abs", "share_low", "share_high", "rank_unstable"} <= set(row)
    by_word = client.get(f"/api/v1/explanations/{report.pk}/export.json?unit=word&min_texts=1").json()
    assert by_word["global_importance"]["unit"] == "word"

    response = client.get(f"/api/v1/explanations/{report.pk}/export-global.csv?min_texts=3")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    positive = [r for r in rows if r["label"] == "positive"]
    assert positive[0]["token"] == "好" and positive[0]["rank"] == "1" and positive[0]["texts"] == "40"
    assert positive[-1]["token"].startswith("(rare: 1")
    assert sum(float(r["share"]) for r in positive) == pytest.approx(100.0)


@pytest.mark.parametrize("query, field", [("unit=sentence", "unit"), ("min_texts=0", "min_texts")])
def test_bad_view_parameters_are_refused(engineer, version, query, field):
    report = make_report(version=version, requested_by=engineer, results=rare_and_frequent_results())
    for path in ("export.json", "export-global.csv"):
        response = api_client_for(engineer).get(f"/api/v1/explanations/{report.pk}/{path}?{query}")
        assert response.status_code == 400 and field in response.json()["detail"]


def test_the_review_evidence_lists_the_top_tokens_by_share(engineer, reviewer, version):
    from explanations.selectors import report_top_tokens

    report = make_report(version=version, requested_by=engineer, results=rare_and_frequent_results())
    top = report_top_tokens(report)
    assert [t["token"] for t in top[1]["tokens"]] == ["好", "的"] and top[1]["label"] == "positive"


def test_comparison_ranks_both_versions_by_share(engineer, version):
    new_version = ModelVersionFactory(model=version.model, labels=version.labels)
    make_report(version=version, requested_by=engineer, results=rare_and_frequent_results())
    leaning = rare_and_frequent_results()
    leaning["texts"] = [entry(i, ["<快递>", "好"], [0.5, 0.1], text="<快递>好") for i in range(5)]
    make_report(version=new_version, requested_by=engineer, results=leaning)
    page = browser(engineer).get(f"/models/{version.model.name}/explanations/compare/?a=1&b=2").content.decode()
    assert page.count('class="new-reliance"') == 2  # one per class: <快递> is new to the top
    assert "&lt;快递&gt;" in page and "<快递>" not in page
    assert "Leaned on more by v2 (gain in share)" in page and "+83.33 points" in page
