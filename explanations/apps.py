from django.apps import AppConfig


class ExplanationsConfig(AppConfig):
    """SHAP / LIME / permutation-importance reports on model versions."""

    name = "explanations"
