from django.apps import AppConfig


class ExplanationsConfig(AppConfig):
    """SHAP / LIME / permutation-importance reports (built in a later issue)."""

    name = "explanations"
