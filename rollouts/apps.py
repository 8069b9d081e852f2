from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    """Staged rollouts, the prediction router and monitoring (built in a later issue)."""

    name = "rollouts"
