import io
import json

import pytest

from governance.models import AuditEvent
from registry.models import Dataset
from registry.selectors import dataset_rows
from tests.conftest import stored_files


def post_dataset(client, data: bytes, filename: str, name: str = "holdout"):
    handle = io.BytesIO(data)
    handle.name = filename
    return client.post("/api/v1/datasets/", {"file": handle, "name": name}, format="multipart")


@pytest.mark.django_db
def test_csv_dataset_upload(api, engineer, reviewer, demo_models):
    response = post_dataset(api(engineer), demo_models["holdout_csv"].read_bytes(), "holdout.csv")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["format"] == "csv" and body["labels"] == ["negative", "positive"]
    dataset = Dataset.objects.get()
    rows = dataset_rows(dataset)
    assert len(rows) == body["row_count"] > 50
    assert all(text and label in ("negative", "positive") for text, label in rows)
    listed = api(reviewer).get("/api/v1/datasets/").json()["results"]
    assert [d["id"] for d in listed] == [dataset.pk]
    assert AuditEvent.objects.filter(action="dataset.create", outcome="ok").count() == 1


@pytest.mark.django_db
def test_jsonl_dataset_upload(api, engineer):
    lines = [
        json.dumps({"text": "物流很快，包装完好", "label": "positive"}, ensure_ascii=False),
        json.dumps({"text": "客服态度恶劣", "label": "negative"}, ensure_ascii=False),
    ]
    response = post_dataset(api(engineer), "\n".join(lines).encode(), "eval.jsonl")
    assert response.status_code == 201, response.json()
    assert response.json()["row_count"] == 2
    assert dataset_rows(Dataset.objects.get()) == [("物流很快，包装完好", "positive"), ("客服态度恶劣", "negative")]


BAD_DATASETS = {
    "no label column": ("a.csv", "text,target\n好,positive\n".encode()),
    "no text column": ("a.csv", "content,label\n好,positive\n".encode()),
    "undecodable bytes": ("a.csv", b"text,label\n" + "好".encode("gbk") + b",positive\n"),
    "empty text": ("a.csv", b"text,label\n ,positive\n"),
    "empty file": ("a.csv", b""),
    "jsonl not objects": ("a.jsonl", b'["text", "label"]\n'),
    "jsonl bad json": ("a.jsonl", b'{"text": "x", "label": \n'),
    "jsonl missing label": ("a.jsonl", '{"text": "好"}\n'.encode()),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(BAD_DATASETS))
def test_bad_dataset_is_refused_and_leaves_nothing(api, engineer, case):
    filename, data = BAD_DATASETS[case]
    before = stored_files()
    response = post_dataset(api(engineer), data, filename)
    assert response.status_code == 400, (case, response.json())
    assert response.json()["detail"]
    assert not Dataset.objects.exists()
    assert stored_files() == before


@pytest.mark.django_db
def test_reviewer_cannot_upload_datasets(api, reviewer):
    response = post_dataset(api(reviewer), "text,label\n好,positive\n".encode(), "a.csv")
    assert response.status_code == 403
    assert not Dataset.objects.exists()
    assert AuditEvent.objects.filter(action="dataset.create", outcome="denied").exists()


@pytest.mark.django_db
def test_dataset_name_must_be_a_slug(api, engineer):
    response = post_dataset(api(engineer), "text,label\n好,positive\n".encode(), "a.csv", name="../../etc")
    assert response.status_code == 400
    assert "name" in response.json()["detail"]
