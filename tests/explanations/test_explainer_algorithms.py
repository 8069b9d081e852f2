"""The explainer registry and parameter checks the web process relies on."""

import subprocess
import sys

import pytest
from django.conf import settings

from explanations.explainers import EXPLAINER_CLASSES, get_explainer
from glassbox.errors import InvalidInput


def test_registry_names_the_four_methods():
    assert set(EXPLAINER_CLASSES) == {"shap", "lime", "pfi", "ig"}
    for method in EXPLAINER_CLASSES:
        explainer = get_explainer(method)
        assert explainer.method == method
        assert explainer.is_global is (method == "pfi")
    with pytest.raises(KeyError):
        get_explainer("gradcam")


def test_validating_parameters_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from explanations.explainers import get_explainer\n"
        "for m in ('shap', 'lime', 'pfi', 'ig'):\n"
        "    e = get_explainer(m); p = e.validate_params({}); e.plan_chunks(10, p); e.estimated_rows(10, p, 2)\n"
        "heavy = [name for name in ('shap', 'lime', 'torch', 'transformers', 'sklearn', 'jieba', 'captum')\n"
        "         if name in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=settings.BASE_DIR)


def test_defaults_are_filled_in():
    assert get_explainer("shap").validate_params({}) == {
        "max_evals": 500,
        "tolerance": 0.05,
        "estimator": "antithetic",
        "seed": 0,
        "chunk_size": 25,
        "batch_size": 128,
    }
    lime = get_explainer("lime").validate_params({"num_samples": 200, "unit": "char"})
    assert lime["num_samples"] == 200 and lime["unit"] == "char" and lime["seed"] == 0
    pfi = get_explainer("pfi").validate_params({"top_k": 7})
    assert (pfi["top_k"], pfi["repeats"], pfi["unit"]) == (7, 5, "word")


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("shap", {"max_evals": 5}, "'max_evals' must be between 10 and 100000"),
        ("shap", {"max_evals": 10**9}, "must be between"),
        ("shap", {"max_evals": "many"}, "must be a number"),
        ("shap", {"max_evals": True}, "must be a number"),
        ("shap", {"max_evals": 12.5}, "whole number"),
        ("shap", {"samples": 100}, "unknown parameter"),
        ("lime", {"num_samples": 10}, "'num_samples' must be between"),
        ("lime", {"unit": "sentence"}, "'unit' must be one of word, char"),
        ("lime", {"seed": -1}, "'seed' must be between"),
        ("pfi", {"repeats": 0}, "'repeats' must be between 1 and 100"),
        ("pfi", {"top_k": 1000}, "'top_k' must be between"),
        ("pfi", {"shap_results": [1]}, "must be an object"),
    ],
)
def test_out_of_range_or_unknown_parameters_are_refused(method, params, message):
    with pytest.raises(InvalidInput, match=message):
        get_explainer(method).validate_params(params)


def test_bad_inputs_are_refused():
    explainer = get_explainer("shap")
    with pytest.raises(InvalidInput, match="no texts"):
        explainer.check_inputs([], None)
    with pytest.raises(InvalidInput, match="empty"):
        explainer.check_inputs(["好", "  "], None)
    with pytest.raises(InvalidInput, match="one label per text"):
        explainer.check_inputs(["好"], ["positive", "negative"])


def test_chunks_are_json_specs():
    assert get_explainer("shap").plan_chunks(60, {"chunk_size": 25}) == [
        {"start": 0, "stop": 25},
        {"start": 25, "stop": 50},
        {"start": 50, "stop": 60},
    ]
    assert get_explainer("pfi").plan_chunks(1000, {"top_k": 12, "chunk_size": 5}) == [
        {"feature_start": 0, "feature_stop": 5},
        {"feature_start": 5, "feature_stop": 10},
        {"feature_start": 10, "feature_stop": 12},
    ]
