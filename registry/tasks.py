"""Registry jobs for the workers: thin, idempotent, keyed by primary key."""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=3)
def warm_version(version_id: int) -> dict:
    """Fetch a new version's artifact into this worker's cache and load it, so
    the first explanation or prediction does not pay for it. Idempotent."""
    from registry.models import ModelVersion
    from registry.selectors import version_predictor
    from registry.services import version_choose_inference_backend

    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None:
        logger.warning("warm_version: version %s no longer exists", version_id)
        return {"warmed": False}
    version_predictor(version)  # loads (and so checks) the torch model first
    # Export to ONNX and check it against torch here, in the worker, where no
    # request waits for it (GLASSBOX_INFERENCE_BACKEND).
    version = version_choose_inference_backend(actor=None, version=version)
    predictor = version_predictor(version)
    probabilities = predictor.predict_proba(["预热"])
    logger.info(
        "warmed %s (%s labels) with %s on %s", version, probabilities.shape[1], predictor.backend, predictor.device
    )
    return {"warmed": True, "labels": predictor.labels, "backend": predictor.backend, "device": predictor.device}
