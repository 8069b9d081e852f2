"""Reads for the registry: what a user may see, and a version's model."""

import logging
from pathlib import Path

from django.db.models import Count, QuerySet

from glassbox.errors import InvalidInput, NotFound, NotPermitted
from governance.access import has_standing, model_read_filter
from registry.artifacts import local_dataset_path, local_model_path
from registry.datasets import parse_dataset
from registry.models import Dataset, ModelVersion, RegisteredModel

logger = logging.getLogger(__name__)


def _require_read(user) -> None:
    # Before any lookup: the refusal is the same whether the object exists or not.
    if not has_standing(user):
        raise NotPermitted("You have no role that may read the registry.")


def model_list(*, user) -> QuerySet[RegisteredModel]:
    """The models `user` may read (governance/access.py)."""
    _require_read(user)
    return (
        RegisteredModel.objects.filter(model_read_filter(user))
        .annotate(version_count=Count("versions"))
        .select_related("created_by", "team")
    )


def model_get(*, user, name: str) -> RegisteredModel:
    """A model `user` may read; one they may not is answered as if it did not
    exist (404), so a name alone reveals nothing."""
    _require_read(user)
    model = RegisteredModel.objects.select_related("created_by", "team").filter(name=name).first()
    if model is None or not model.can_be_viewed_by(user):
        raise NotFound(f"No model named {name!r}.")
    return model


# A version's JSON and pages show its review; fetch reviews with the versions.
_REVIEWS = ("reviews__opened_by", "reviews__decisions__reviewer")


def version_list(*, user, model: RegisteredModel) -> QuerySet[ModelVersion]:
    _require_read(user)
    return model.versions.select_related("created_by", "model").prefetch_related(*_REVIEWS).order_by("-number")


def version_get(*, user, name: str, number: int) -> ModelVersion:
    model = model_get(user=user, name=name)
    versions = model.versions.select_related("created_by", "model").prefetch_related(*_REVIEWS)
    version = versions.filter(number=number).first()
    if version is None:
        raise NotFound(f"{name} has no version {number}.")
    return version


def dataset_list(*, user) -> QuerySet[Dataset]:
    _require_read(user)
    return Dataset.objects.select_related("created_by")


def dataset_get(*, user, pk: int, referenced: str | None = None) -> Dataset:
    """A dataset by id. One named in the URL and missing is a 404; one
    referenced from a request body (a report's or rollout's dataset; pass the
    body's field name as `referenced`) is the caller's invalid input, a 400
    naming that field."""
    _require_read(user)
    dataset = Dataset.objects.select_related("created_by").filter(pk=pk).first()
    if dataset is None:
        if referenced:
            raise InvalidInput(f"No dataset {pk}.", field=referenced)
        raise NotFound(f"No dataset {pk}.")
    return dataset


def dataset_rows(dataset: Dataset) -> list[tuple[str, str]]:
    """The (text, label) rows, from this machine's verified copy of the stored
    file (fetched and checked against its SHA-256 on first use; the rows were
    checked on upload)."""
    path = local_dataset_path(sha256=dataset.sha256, storage_key=dataset.storage_key)
    return parse_dataset(path, filename=f"x.{dataset.format}", max_rows=dataset.row_count).rows


def onnx_export_dir(sha256: str) -> Path:
    """Where the ONNX export of an artifact lives (by digest, under the data directory)."""
    from django.conf import settings

    return settings.ONNX_CACHE_DIR / sha256


def version_serving_backend(version: ModelVersion, device: str) -> str:
    """ "onnx" where this process may serve the version's checked ONNX export, else "torch"."""
    from django.conf import settings

    from registry.onnx_export import MODEL_FILE

    mode = settings.GLASSBOX_INFERENCE_BACKEND
    if mode == "torch" or version.inference_backend != ModelVersion.InferenceBackend.ONNX:
        return "torch"
    if device == "cuda" and mode == "auto":
        return "torch"
    if not (onnx_export_dir(version.artifact_sha256) / MODEL_FILE).is_file():
        # Checked on another machine: the warm task re-exports here next time.
        logger.warning("%s: no ONNX export on this machine, torch serves", version)
        return "torch"
    return "onnx"


def version_predictor(version: ModelVersion):
    """The loaded model of a version, from this process's bounded cache, run
    by the backend its agreement check chose, on GLASSBOX_DEVICE."""
    from django.conf import settings

    from registry.onnx_export import MODEL_FILE
    from registry.predictors import get_predictor, resolve_device

    path = local_model_path(sha256=version.artifact_sha256, artifact_key=version.artifact_key, flavor=version.flavor)
    if version.flavor != ModelVersion.Flavor.TRANSFORMERS:
        return get_predictor(version.artifact_sha256, path, version.flavor)
    device = resolve_device(settings.GLASSBOX_DEVICE)
    if version_serving_backend(version, device) == "onnx":
        onnx_file = onnx_export_dir(version.artifact_sha256) / MODEL_FILE
        try:
            return get_predictor(
                version.artifact_sha256, path, version.flavor, backend="onnx", device=device, onnx_file=onnx_file
            )
        except Exception:  # a broken export never fails a prediction: torch answers
            logger.exception("%s: the ONNX export did not load, torch serves", version)
    return get_predictor(version.artifact_sha256, path, version.flavor, backend="torch", device=device)
