"""Explanation methods behind one small interface, found by name.

The registry holds dotted paths, not classes: the web process validates
parameters through ``get_explainer(method)`` without importing shap, lime or
torch; a worker imports them when it computes.

Contract (what the report tasks call)::

    explainer = get_explainer("shap")             # KeyError for an unknown method
    explainer.method, explainer.is_global         # "shap", False  (pfi: True)
    params = explainer.validate_params(raw)       # defaults filled; InvalidInput on unknown keys / out of range
    explainer.check_inputs(texts, labels, model_labels)   # InvalidInput: no texts, empty texts,
                                                  # labels the model does not know, pfi without labels
    chunks = explainer.plan_chunks(len(texts), params)    # JSON-able specs: {"start", "stop"} rows for
                                                  # shap/lime, {"feature_start", "feature_stop"} for pfi
    part = explainer.run_chunk(predictor, texts, labels, chunk, params, progress=None)
        # ``texts``/``labels`` are the report's whole lists; the chunk picks its part.
        # JSON-able, deterministic for a seed whatever the chunking (idempotent);
        # progress(fraction 0..1) is called now and then.
    results = explainer.combine(predictor, texts, labels, [part, ...], params)
    fidelity = explainer.fidelity(predictor, texts, labels, results, params)

Local results (shap, lime)::

    {"texts": [{"index", "text", "truncated", "tokens": [{"text", "start", "end"}],
                "predicted_label", "probabilities": {label: p},
                "base_values": {label: f(all masked)}, "values": {label: [one float per token]},
                "additivity_error" (shap) | "r2" (lime), "true_label", ...}],
     "global": {label: [{"rank", "token", "share", "share_low", "share_high", "rank_unstable",
                         "texts", "count", "mean", "mean_abs"}, ...top 50 by share]},
     # (reports made before the share ranking stored {"token", "mean_abs", "mean", "count"} by
     #  mean_abs; pages and exports recompute explanations.global_importance from "texts")
     "labels": [...], "truncated_count": int}

For lime the "tokens" are its features (jieba words or model tokens). PFI
results: {"baseline": {"accuracy", "macro_f1"}, "features": [{"token",
"accuracy_drop_mean", "accuracy_drop_std", "macro_f1_drop_mean",
"macro_f1_drop_std", "texts_affected"}], "repeats", "top_k", "unit",
"shap_summary" (when params["shap_results"] holds a SHAP report's results)}.

Fidelity: {"comprehensiveness": {"1", "5", "10", "20", "50", "aopc"},
"sufficiency": {...}, "random_baseline": {"comprehensiveness", "sufficiency"},
"texts": n} plus "additivity_max_error" (shap) or "r2_mean" (lime); see
explanations.fidelity.
"""

from __future__ import annotations

from importlib import import_module

from explanations.explainers.base import Explainer

EXPLAINER_CLASSES = {
    "shap": "explanations.explainers.shap_owen.OwenShapExplainer",
    "lime": "explanations.explainers.lime_text.LimeTextExplainer",
    "pfi": "explanations.explainers.pfi.PermutationImportanceExplainer",
    "ig": "explanations.explainers.integrated_gradients.IntegratedGradientsExplainer",
}


def get_explainer(method: str) -> Explainer:
    """A new explainer for ``method``; KeyError if there is no such method."""
    path = EXPLAINER_CLASSES[method]
    module_name, class_name = path.rsplit(".", 1)
    return getattr(import_module(module_name), class_name)()


__all__ = ["EXPLAINER_CLASSES", "Explainer", "get_explainer"]
