"""Forms of the rollout pages. They only collect input: ranges, the
candidate's status and every other rule are the services' to check."""

import copy

from django import forms

from registry.models import Dataset, ModelVersion, RegisteredModel
from rollouts.models import DEFAULT_STEPS, DEFAULT_THRESHOLDS

# Step presets a person picks from; the API takes any list of steps.
STEP_PRESETS = {
    "default": ("Shadow, then 5 %, 25 %, 50 %, 100 % (5 min bake each)", DEFAULT_STEPS),
    "quick": (
        "Shadow, then 5 %, 25 %, 50 %, 100 % (1 min bake each)",
        [{**step, "bake_seconds": 60} for step in DEFAULT_STEPS],
    ),
    "no-shadow": ("5 %, 25 %, 50 %, 100 % (5 min bake each, no shadow step)", DEFAULT_STEPS[1:]),
}

THRESHOLD_LABELS = {
    "max_error_rate": "Max error rate (0-1)",
    "max_latency_p95_ratio": "Max p95 latency ratio to stable",
    "max_label_divergence": "Max label divergence from stable (Jensen-Shannon)",
    "min_shadow_agreement": "Min agreement with stable on shadow traffic (0-1)",
    "max_input_drift": "Max input drift (character JS distance)",
    "min_requests": "Min candidate requests per interval",
    "failure_limit": "Failed analyses tolerated",
}


class RolloutStartForm(forms.Form):
    candidate = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), empty_label=None)
    steps_preset = forms.ChoiceField(choices=[(key, label) for key, (label, _) in STEP_PRESETS.items()], label="Steps")
    analysis_interval_seconds = forms.IntegerField(required=False, label="Analysis interval (seconds)")
    reference_dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(),
        required=False,
        empty_label="— the candidate's explanation dataset —",
        help_text="Live inputs are compared with this set for drift.",
    )

    def __init__(self, *args, model: RegisteredModel, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["candidate"].queryset = model.versions.filter(status=ModelVersion.Status.APPROVED).order_by(
            "-number"
        )
        self.fields["candidate"].label_from_instance = lambda version: f"v{version.number}"
        self.fields["reference_dataset"].queryset = Dataset.objects.order_by("-created_at", "-id")
        for name, default in DEFAULT_THRESHOLDS.items():
            field_class = forms.IntegerField if isinstance(default, int) else forms.FloatField
            self.fields[f"threshold_{name}"] = field_class(
                required=False, initial=default, label=THRESHOLD_LABELS.get(name, name)
            )

    def threshold_fields(self):
        return [self[f"threshold_{name}"] for name in DEFAULT_THRESHOLDS]

    def service_arguments(self) -> dict:
        """Keyword arguments for rollouts.services.rollout_start."""
        data = self.cleaned_data
        thresholds = {
            name: data[f"threshold_{name}"] for name in DEFAULT_THRESHOLDS if data.get(f"threshold_{name}") is not None
        }
        return {
            "candidate": data["candidate"],
            "steps": copy.deepcopy(STEP_PRESETS[data["steps_preset"]][1]),
            "thresholds": thresholds or None,
            "analysis_interval_seconds": data.get("analysis_interval_seconds"),
            "reference_dataset": data.get("reference_dataset"),
        }


class RolloutActionForm(forms.Form):
    """A manual gate: the confirm box is the confirmation step (no JavaScript)."""

    confirm = forms.BooleanField(required=True, error_messages={"required": "Tick the box to confirm."})
    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class RollbackForm(forms.Form):
    """Back to the previous version: a confirm box and a reason, both required."""

    confirm = forms.BooleanField(required=True, error_messages={"required": "Tick the box to confirm."})
    reason = forms.CharField(
        required=True,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": "Say why the model is rolled back."},
    )
