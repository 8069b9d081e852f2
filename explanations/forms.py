import json

from django import forms

from explanations.models import ExplanationReport
from registry.models import Dataset


class ReportRequestForm(forms.Form):
    method = forms.ChoiceField(choices=ExplanationReport.Method.choices)
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), required=False, empty_label="— inline texts —")
    texts = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One text per line (used when no dataset is chosen).",
    )
    params = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": '{"max_evals": 500}'}),
        help_text="Method parameters as a JSON object; empty for the defaults.",
    )
    sample_n = forms.IntegerField(
        required=False,
        min_value=1,
        label="Sample",
        help_text="Explain only this many texts of the dataset, drawn at random, stratified by label.",
    )
    sample_seed = forms.IntegerField(required=False, min_value=0, initial=0, label="Sample seed")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = Dataset.objects.order_by("-created_at", "-id")

    def clean_texts(self) -> list[str] | None:
        lines = [line.strip() for line in self.cleaned_data["texts"].splitlines()]
        return [line for line in lines if line] or None

    def clean_params(self) -> dict:
        raw = self.cleaned_data["params"].strip()
        if not raw:
            return {}
        try:
            params = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from exc
        if not isinstance(params, dict):
            raise forms.ValidationError("Parameters must be a JSON object.")
        return params

    def clean(self):
        data = super().clean()
        if data.get("dataset") is None and not data.get("texts"):
            raise forms.ValidationError("Choose a dataset or type at least one text.")
        n = data.get("sample_n")
        data["sample"] = None if n is None else {"n": n, "seed": data.get("sample_seed") or 0}
        return data
