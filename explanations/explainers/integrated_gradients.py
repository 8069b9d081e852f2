"""Integrated gradients (Sundararajan et al. 2017, "Axiomatic Attribution for
Deep Networks") over a transformers model's input embeddings, with Captum's
LayerIntegratedGradients.

The attribution of a token is the path integral of the gradient of p(label)
along the straight line from a baseline input to the text, summed over the
embedding dimensions of that token's position. The baseline is the text with
every token but [CLS]/[SEP] replaced by the model's [MASK] (or [PAD]; see
DEFAULT_BASELINE for why).

Completeness is the method's additivity check: the attributions of a text sum
to f(x) − f(baseline) up to the error of the numerical integration; each text
records |Σ attributions − (f(x) − f(baseline))| as ``completeness_error``.

Gradients need the torch model, so IG always runs on torch, even where ONNX
Runtime serves the version's predictions (the ONNX backend is used only after
it agreed with torch within 1e-4 on every probability). Fidelity (ERASER) is
measured on the serving backend like every other method's.
"""

from __future__ import annotations

from explanations.explainers.base import LocalExplainer, Param
from explanations.masking import Progress, prepare_text
from glassbox.errors import InvalidInput

# Both defaults measured with bench/ig.py on the full demo char BERT, 20
# held-out texts of 50-80 characters (README, "Choosing a method"):
# - n_steps 16: Captum's Gauss-Legendre rule already holds the worst
#   completeness error at 2.9e-4 of |f(x) - f(baseline)| ([MASK]; 4.9e-5 with
#   [PAD]), far inside the 5 % the tests hold it to, and the token ranking (so
#   ERASER AOPC) is the same at 16, 32 and 50 steps, while the time grows with
#   the steps (0.028 / 0.049 / 0.069 s per text, one thread, quiet machine).
#   Every report measures its own completeness: a model that needs more steps
#   shows it, and n_steps goes to 1000.
# - the [MASK] baseline: comprehensiveness AOPC 0.475 against [PAD]'s 0.448
#   (SHAP@500: 0.473) and sufficiency -0.001 against 0.003; and it is the
#   reference SHAP and LIME mask with, so f(baseline) is SHAP's base value
#   (the same all-[MASK] input; equal within 4e-8 when checked) and IG and
#   SHAP values of a text sum to the same f(x) - base. [PAD] stays a
#   choice: where a model reads all-[MASK] much like the text (|Δ| was as small
#   as 0.015 here, 0.117 with [PAD]) the attributions are small.
DEFAULT_STEPS = 16
BASELINES = ("mask", "pad")
DEFAULT_BASELINE = "mask"
# Path points × token positions in one forward/backward pass when
# internal_batch_size is left to us (0). By rough arithmetic (not measured) a
# BERT-base's backward pass keeps about 1 MB of activations per position at
# 512 tokens, so a few GB; a narrower model gets a proportionally larger budget.
AUTO_TOKEN_BUDGET = 4096
REFERENCE_HIDDEN = 768
# One IG path point (forward and backward) costs about three forward rows:
# measured 2.6-3.5 on the full demo BERT, 3.2 on the quick one (bench/ig.py).
# Used for model_rows and the time estimate.
FORWARD_ROWS_PER_STEP = 3


def token_budget(model) -> int:
    hidden = int(getattr(getattr(model, "config", None), "hidden_size", REFERENCE_HIDDEN) or REFERENCE_HIDDEN)
    return AUTO_TOKEN_BUDGET * max(1, REFERENCE_HIDDEN // max(1, hidden))


def _probabilities(model):
    import torch

    def forward(input_ids, attention_mask):
        return torch.softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), dim=-1)

    return forward


class IntegratedGradientsExplainer(LocalExplainer):
    method = "ig"
    flavors = ("transformers",)
    PARAMS = {
        "n_steps": Param(int, DEFAULT_STEPS, 4, 1000, help="points on the path from the baseline to the text"),
        "internal_batch_size": Param(
            int, 0, 0, 4096, help="path points per forward/backward pass; 0 sizes it from the text's length"
        ),
        "baseline": Param(str, DEFAULT_BASELINE, choices=BASELINES),
        "target": Param(str, "predicted", choices=("predicted", "all")),
        # Recorded with every report: gradients need the torch model, whichever backend serves.
        "gradients_backend": Param(str, "torch", choices=("torch",), help="IG always runs on torch"),
        "seed": Param(int, 0, 0, 2**31 - 1, help="seeds the random ranking fidelity compares against"),
        "chunk_size": Param(int, 25, 1, 1000, help="texts per chunk"),
        "batch_size": Param(int, 128, 1, 4096, help="rows per forward pass of the fidelity check"),
    }

    def rows_per_text(self, params: dict, n_labels: int) -> int:
        """Forward-row equivalents: every path point forward and backward, for
        each target label, plus f(x) and f(baseline)."""
        targets = n_labels if params["target"] == "all" else 1
        return FORWARD_ROWS_PER_STEP * int(params["n_steps"]) * targets + 2

    def run_chunk(self, predictor, texts, labels, chunk: dict, params: dict, progress: Progress = None) -> dict:
        from captum.attr import LayerIntegratedGradients

        params = self.validate_params(params)
        if not hasattr(predictor, "torch_parts"):
            raise InvalidInput(
                f"Integrated gradients needs the gradients of a transformers model; this is a {predictor.flavor} model.",
                field="method",
            )
        model, tokenizer, device = predictor.torch_parts()
        forward = _probabilities(model)
        integrator = LayerIntegratedGradients(forward, model.get_input_embeddings())
        baseline_id = tokenizer.pad_token_id if params["baseline"] == "pad" else tokenizer.mask_token_id
        if baseline_id is None:
            raise InvalidInput(f"The model's tokenizer has no {params['baseline']} token.", field="params.baseline")
        budget = token_budget(model)

        indices = range(int(chunk["start"]), min(len(texts), int(chunk["stop"])))
        items = []
        for index in indices:
            prepared = prepare_text(predictor, texts[index])
            items.append((index, prepared, *self._encode(predictor, tokenizer, prepared)))
        # Texts of similar length share a batch (little padding): as many as
        # the token budget holds with every path point in one pass.
        items.sort(key=lambda item: (len(item[2]), item[0]))
        targets_per_text = len(predictor.labels) if params["target"] == "all" else 1
        groups: list[list] = []
        for item in items:
            rows = (len(groups[-1]) + 1) * targets_per_text if groups else 0
            if groups and rows * params["n_steps"] * len(item[2]) <= budget:
                groups[-1].append(item)
            else:
                groups.append([item])

        entries = []
        for group in groups:
            entries.extend(
                self._explain_group(predictor, integrator, forward, group, baseline_id, budget, device, params)
            )
            if progress:
                progress(len(entries) / max(1, len(items)))
        entries.sort(key=lambda entry: entry["index"])
        for entry in entries:
            entry["text"] = str(texts[entry["index"]])
            entry["true_label"] = None if labels is None else str(labels[entry["index"]])
        return {"texts": entries, "model_rows": len(entries) * self.rows_per_text(params, len(predictor.labels))}

    def _explain_group(self, predictor, integrator, forward, group, baseline_id, budget, device, params) -> list[dict]:
        """IG for the texts of one batch, padded on the right: a padded position
        is [PAD] in the text and in the baseline alike and hidden from
        attention, so it gets no attribution and changes nothing else."""
        import torch

        label_names = list(predictor.labels)
        width = max(len(item[2]) for item in group)
        ids = torch.zeros((len(group), width), dtype=torch.long, device=device)
        base = ids.clone()
        attention = torch.zeros_like(ids)
        for row, (_, _, input_ids, special, _) in enumerate(group):
            n = len(input_ids)
            ids[row, :n] = torch.tensor(input_ids, device=device)
            base[row, :n] = ids[row, :n]
            base[row, :n][~torch.tensor(special, device=device)] = baseline_id
            attention[row, :n] = 1
        with torch.no_grad():
            probs = forward(torch.cat([ids, base]), torch.cat([attention, attention])).double().cpu().numpy()
        f_x, f_base = probs[: len(group)], probs[len(group) :]
        predicted = f_x.argmax(axis=1)

        # One attribution row per (text, target label).
        rows = [
            (row, target)
            for row in range(len(group))
            for target in (range(len(label_names)) if params["target"] == "all" else [int(predicted[row])])
        ]
        select = torch.tensor([row for row, _ in rows], device=device)
        attributions = self._integrate(
            integrator,
            ids[select],
            base[select],
            attention[select],
            [target for _, target in rows],
            params["internal_batch_size"] or max(len(rows), min(len(rows) * params["n_steps"], budget // width)),
            params,
        )

        entries: dict[int, dict] = {}
        for (row, target), per_position in zip(rows, attributions):
            index, prepared, _, _, positions = group[row]
            top = int(predicted[row])
            entry = entries.setdefault(
                row,
                {
                    "index": index,
                    "truncated": prepared.truncated,
                    "tokens": [{"text": prepared.text[s:e], "start": s, "end": e} for s, e in prepared.spans],
                    "predicted_label": label_names[top],
                    "probabilities": {label: float(p) for label, p in zip(label_names, f_x[row])},
                    "base_values": {label: float(b) for label, b in zip(label_names, f_base[row])},
                    "values": {},
                    "completeness_error": 0.0,
                    "completeness_delta": float(abs(f_x[row, top] - f_base[row, top])),
                    "evaluations": 0,
                },
            )
            error = abs(float(per_position.sum()) - float(f_x[row, target] - f_base[row, target]))
            entry["completeness_error"] = max(entry["completeness_error"], error)
            entry["values"][label_names[target]] = [float(per_position[p]) for p in positions]
            entry["evaluations"] += int(params["n_steps"])
        if params["target"] == "predicted" and len(label_names) == 2:
            # With two labels p(other) = 1 − p(predicted) all along the path:
            # its attributions are exactly the negation.
            for row, entry in entries.items():
                other = label_names[1 - int(predicted[row])]
                entry["values"][other] = [-v for v in entry["values"][entry["predicted_label"]]]
        return list(entries.values())

    @staticmethod
    def _encode(predictor, tokenizer, prepared) -> tuple[list[int], list[bool], list[int]]:
        """The model's input ids for a prepared text, which of them are special
        ([CLS], [SEP]), and for each of its tokens (prepared.spans) the input
        position that holds it. Encoded as predict_proba encodes (same truncation)."""
        encoded = tokenizer(
            [prepared.text],
            truncation=True,
            max_length=predictor.max_length,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        special = [bool(s) for s in encoded["special_tokens_mask"][0]]
        by_span = {
            (int(start), int(end)): position
            for position, ((start, end), is_special) in enumerate(zip(encoded["offset_mapping"][0], special))
            if not is_special and end > start
        }
        return list(encoded["input_ids"][0]), special, [by_span[span] for span in prepared.spans]

    @staticmethod
    def _integrate(integrator, ids, base, attention, targets: list[int], size: int, params: dict):
        """One attribution per input position (summed over the embedding) for
        each row. Captum splits rows × path points into passes of ``size``;
        out of GPU memory, that halves and the batch is tried again."""
        import torch

        while True:
            try:
                attributions = integrator.attribute(
                    ids,
                    baselines=base,
                    additional_forward_args=(attention,),
                    target=targets,
                    n_steps=params["n_steps"],
                    internal_batch_size=size,
                )
                return attributions.sum(dim=-1).detach().double().cpu().numpy()
            except torch.cuda.OutOfMemoryError:
                if size <= 1:
                    raise
                torch.cuda.empty_cache()
                size = max(1, size // 2)

    def combine(self, predictor, texts, labels, chunk_results: list[dict], params: dict) -> dict:
        results = super().combine(predictor, texts, labels, chunk_results, params)
        results["completeness_max_error"] = completeness_max(results["texts"])
        results["gradients_backend"] = "torch"
        # Fidelity and the served predictions come from the serving backend (ONNX Runtime or torch).
        results["serving_backend"] = getattr(predictor, "backend", "torch")
        return results

    def fidelity(self, predictor, texts, labels, results: dict, params: dict) -> dict:
        scores = super().fidelity(predictor, texts, labels, results, params)
        scores["completeness_max_error"] = completeness_max(results["texts"])
        return scores


def completeness_max(entries: list[dict]) -> float:
    return max((float(entry["completeness_error"]) for entry in entries), default=0.0)
