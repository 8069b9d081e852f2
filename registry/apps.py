import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)


def _record_refusal(sender, *, key: str, sha256: str, found: str, **kwargs) -> None:
    from registry.services import artifact_refusal_record

    try:
        artifact_refusal_record(kind=sender, key=key, sha256=sha256, found=found)
    except Exception:  # the refusal itself stands even when the trail cannot be written
        logger.exception("could not record the refusal of %s", key)


class RegistryConfig(AppConfig):
    name = "registry"
    verbose_name = "Model registry"

    def ready(self):
        from registry.signals import artifact_refused

        artifact_refused.connect(_record_refusal, dispatch_uid="registry-record-artifact-refusal")
