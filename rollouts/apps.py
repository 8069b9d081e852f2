import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)


def _raise_integrity_alerts(sender, *, key: str, sha256: str, found: str, **kwargs) -> None:
    from rollouts.services import artifact_integrity_alerts_raise

    if sender != "models":
        return  # an alert belongs to a version; a dataset's refusal is in the trail
    try:
        artifact_integrity_alerts_raise(sha256=sha256, key=key, found=found)
    except Exception:
        logger.exception("could not raise the integrity alert of %s", key)


def _clear_integrity_alerts(sender, *, key: str, sha256: str, **kwargs) -> None:
    from rollouts.services import artifact_integrity_alerts_clear

    if sender != "models":
        return
    try:
        artifact_integrity_alerts_clear(sha256=sha256, key=key)
    except Exception:
        logger.exception("could not clear the integrity alert of %s", key)


class RolloutsConfig(AppConfig):
    """Staged rollouts, the prediction router and monitoring (built in a later issue)."""

    name = "rollouts"

    def ready(self):
        from registry.signals import artifact_refused, artifact_verified

        artifact_refused.connect(_raise_integrity_alerts, dispatch_uid="rollouts-artifact-integrity-alert")
        artifact_verified.connect(_clear_integrity_alerts, dispatch_uid="rollouts-artifact-integrity-clear")
