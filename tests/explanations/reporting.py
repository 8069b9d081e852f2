"""Helpers shared by the explanation tests: versions with and without a real
model behind them, datasets, and report rows in any state."""

import io

from django.core.files.base import ContentFile
from django.utils import timezone

from explanations.models import ExplanationChunk, ExplanationReport
from registry.artifacts import artifact_storage
from registry.models import Dataset, ModelVersion
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, api_client_for, wait_for

SCRIPT_TEXT = "<script>alert('x')</script>很好"


def stored_version(*, uploader, name: str = "zh-sentiment", labels=("negative", "positive")) -> ModelVersion:
    """A version row whose artifact key exists in the store (its content is
    not a model: loading it fails, which some tests want)."""
    model = RegisteredModelFactory(name=name, created_by=uploader)
    version = ModelVersionFactory(model=model, labels=list(labels))
    storage = artifact_storage()
    if not storage.exists(version.artifact_key):
        storage.save(version.artifact_key, ContentFile(b"this is not a model archive"))
    return version


def uploaded_bert(*, uploader, demo_models, name: str = "zh-bert") -> ModelVersion:
    RegisteredModelFactory(name=name, created_by=uploader)
    handle = io.BytesIO(demo_models["bert_zip"].read_bytes())
    handle.name = "bert.zip"
    response = api_client_for(uploader).post(
        f"/api/v1/models/{name}/versions/", {"artifact": handle, "flavor": "transformers"}, format="multipart"
    )
    assert response.status_code == 201, response.json()
    return ModelVersion.objects.get(model__name=name, number=response.json()["version"])


def uploaded_dataset(*, uploader, rows: list[tuple[str, str]], name: str = "holdout") -> Dataset:
    body = "text,label\n" + "".join(f'"{text}",{label}\n' for text, label in rows)
    handle = io.BytesIO(body.encode())
    handle.name = f"{name}.csv"
    response = api_client_for(uploader).post("/api/v1/datasets/", {"file": handle, "name": name}, format="multipart")
    assert response.status_code == 201, response.json()
    return Dataset.objects.get(pk=response.json()["id"])


def local_results(texts: list[str], labels=("negative", "positive"), *, std_errors: bool = False) -> dict:
    """Results shaped like a SHAP report's: one value per character. Without
    ``std_errors`` they are shaped like a report stored before issue 12."""
    entries = []
    for index, text in enumerate(texts):
        tokens = [{"text": ch, "start": i, "end": i + 1} for i, ch in enumerate(text)]
        values = {
            label: [((i % 3) - 1) * 0.1 * (1 if label == labels[1] else -1) for i in range(len(text))]
            for label in labels
        }
        entries.append(
            {
                "index": index,
                "text": text,
                "truncated": False,
                "tokens": tokens,
                "predicted_label": labels[1],
                "probabilities": {labels[0]: 0.2, labels[1]: 0.8},
                "base_values": {labels[0]: 0.5, labels[1]: 0.5},
                "values": values,
                "additivity_error": 1e-9,
                "true_label": None,
            }
        )
        if std_errors:
            # The first character's value (−0.1) is twice its 95 % half-width, the others' intervals include 0.
            entries[-1]["std_errors"] = {label: [0.025] + [0.06] * (len(text) - 1) for label in labels}
            entries[-1]["evaluations"] = 120
            entries[-1]["exact"] = False
    return {
        "texts": entries,
        "global": {
            label: [
                {"token": "好", "mean_abs": 0.3, "mean": 0.3, "count": 2},
                {"token": "差", "mean_abs": 0.2, "mean": -0.2, "count": 1},
            ]
            for label in labels
        },
        "labels": list(labels),
        "truncated_count": 0,
    }


FIDELITY = {
    "comprehensiveness": {"1": 0.1, "5": 0.2, "10": 0.3, "20": 0.4, "50": 0.5, "aopc": 0.3},
    "sufficiency": {"1": 0.3, "5": 0.2, "10": 0.1, "20": 0.05, "50": 0.01, "aopc": 0.13},
    "random_baseline": {
        "comprehensiveness": {"1": 0.01, "5": 0.02, "10": 0.03, "20": 0.04, "50": 0.05, "aopc": 0.03},
        "sufficiency": {"1": 0.4, "5": 0.4, "10": 0.4, "20": 0.4, "50": 0.4, "aopc": 0.4},
    },
    "additivity_max_error": 2e-9,
}

PFI_RESULTS = {
    "baseline": {"accuracy": 0.9, "macro_f1": 0.89},
    "features": [
        {
            "token": "好",
            "accuracy_drop_mean": 0.2,
            "accuracy_drop_std": 0.01,
            "macro_f1_drop_mean": 0.21,
            "macro_f1_drop_std": 0.02,
            "texts_affected": 12,
        },
        {
            "token": "=cmd",
            "accuracy_drop_mean": 0.05,
            "accuracy_drop_std": 0.01,
            "macro_f1_drop_mean": 0.04,
            "macro_f1_drop_std": 0.01,
            "texts_affected": 3,
        },
    ],
    "repeats": 5,
    "top_k": 2,
    "unit": "word",
}


def make_report(
    *,
    version,
    requested_by,
    method="shap",
    status="succeeded",
    texts=None,
    results=None,
    fidelity=None,
    dataset=None,
    chunks: int = 1,
) -> ExplanationReport:
    texts = texts if texts is not None else ["这个手机很好", SCRIPT_TEXT]
    finished = status in ("succeeded", "failed", "cancelled")
    if results is None and status == "succeeded":
        results = PFI_RESULTS if method == "pfi" else local_results(texts, labels=tuple(version.labels))
    now = timezone.now()
    report = ExplanationReport.objects.create(
        version=version,
        method=method,
        dataset=dataset,
        texts=[] if dataset else texts,
        text_count=dataset.row_count if dataset else len(texts),
        params={"seed": 0},
        status=status,
        progress=100 if status == "succeeded" else 0,
        results=results,
        fidelity=fidelity if fidelity is not None else (FIDELITY if status == "succeeded" else None),
        requested_by=requested_by,
        started_at=now if status != "queued" else None,
        finished_at=now if finished else None,
        heartbeat_at=now if status == "running" else None,
        timings={"wall_seconds": 1.5} if finished else {},
    )
    ExplanationChunk.objects.bulk_create(
        ExplanationChunk(
            report=report,
            index=i,
            spec={"start": i, "stop": i + 1},
            status="done" if status == "succeeded" else "pending",
        )
        for i in range(chunks)
    )
    return report


def finished(report_id: int) -> dict | None:
    """The report as its requester reads it from the API once it has ended;
    None while it is still queued or running."""
    requester = ExplanationReport.objects.get(pk=report_id).requested_by
    state = api_client_for(requester).get(f"/api/v1/explanations/{report_id}/").json()
    return state if state["status"] in ("succeeded", "failed", "cancelled") else None


def running_chunk(report_id: int, *, log: str) -> ExplanationChunk:
    """Wait for a chunk of the report that a worker is part way through."""
    return wait_for(
        lambda: ExplanationChunk.objects.filter(report_id=report_id, status="running", progress__gt=0).first(),
        timeout=120,
        interval=0.05,
        what=f"a running chunk\n{log[-3000:]}",
    )
