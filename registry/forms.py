import json

from django import forms

from registry.models import UPLOAD_FLAVOR_CHOICES


class VersionUploadForm(forms.Form):
    artifact = forms.FileField(
        help_text="zip / tar / tar.gz of a saved transformers model or of an MLflow model directory, or a .skops file"
    )
    flavor = forms.ChoiceField(choices=UPLOAD_FLAVOR_CHOICES)
    metrics = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text='JSON, e.g. {"accuracy": 0.87}'
    )
    description = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2}))
    intended_use = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2}))
    limitations = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2}))
    training_data = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2}))
    evaluation_data = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_metrics(self):
        text = self.cleaned_data["metrics"].strip()
        if not text:
            return {}
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg}.") from exc
