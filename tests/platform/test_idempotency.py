"""`Idempotency-Key` on the POSTs that start work (glassbox/idempotency.py):
a retry with the same key and body replays the first answer and starts
nothing; another body is a 409; a request still in flight is a 409; an
error frees the key; keys expire."""

import io
from datetime import timedelta

import pytest
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.parsers import JSONParser
from rest_framework.request import Request

from explanations.models import ExplanationReport
from glassbox.idempotency import request_fingerprint
from glassbox.models import IdempotencyRecord
from registry.models import Dataset
from rollouts.models import Rollout
from tests.conftest import ModelVersionFactory, approve
from tests.explanations.reporting import stored_version


@pytest.fixture
def version(engineer):
    return stored_version(uploader=engineer)


def reports_path(version) -> str:
    return f"/api/v1/models/{version.model.name}/versions/{version.number}/explanations/"


BODY = {"method": "lime", "texts": ["很好", "很差"]}


def test_a_retried_report_request_replays_the_first_answer_and_queues_nothing(
    api, engineer, version, django_capture_on_commit_callbacks
):
    client = api(engineer)
    # The jobs each request would hand the broker once its transaction commits
    # (captured, not sent: no worker runs in this test).
    with django_capture_on_commit_callbacks() as first_enqueues:
        first = client.post(reports_path(version), BODY, format="json", HTTP_IDEMPOTENCY_KEY="report-1")
    with django_capture_on_commit_callbacks() as retry_enqueues:
        retry = client.post(reports_path(version), BODY, format="json", HTTP_IDEMPOTENCY_KEY="report-1")

    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json() and retry["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert ExplanationReport.objects.count() == 1
    assert len(first_enqueues) == 1 and retry_enqueues == []


def test_the_same_key_with_another_body_is_a_conflict(api, engineer, version):
    client = api(engineer)
    client.post(reports_path(version), BODY, format="json", HTTP_IDEMPOTENCY_KEY="report-1")

    other = client.post(
        reports_path(version), {**BODY, "texts": ["一般"]}, format="json", HTTP_IDEMPOTENCY_KEY="report-1"
    )

    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    assert ExplanationReport.objects.count() == 1


def test_a_duplicate_of_a_request_still_running_is_refused(api, engineer, version):
    """What the unique constraint leaves the second of two concurrent
    duplicates: the first one's row, not yet answered."""
    client = api(engineer)
    path = reports_path(version)
    django_request = RequestFactory().post(path, BODY, content_type="application/json")
    fingerprint = request_fingerprint(Request(django_request, parsers=[JSONParser()]))
    IdempotencyRecord.objects.create(user=engineer, key="report-1", endpoint=f"POST {path}", fingerprint=fingerprint)

    response = client.post(path, BODY, format="json", HTTP_IDEMPOTENCY_KEY="report-1")

    assert response.status_code == 409 and response.json()["code"] == "idempotency_in_progress"
    assert not ExplanationReport.objects.exists()


def test_an_error_frees_the_key_for_a_corrected_retry(api, engineer, version):
    client = api(engineer)
    bad = client.post(
        reports_path(version), {"method": "anchors", "texts": ["好"]}, format="json", HTTP_IDEMPOTENCY_KEY="report-1"
    )

    good = client.post(reports_path(version), BODY, format="json", HTTP_IDEMPOTENCY_KEY="report-1")

    assert bad.status_code == 400 and good.status_code == 202
    assert ExplanationReport.objects.count() == 1


def test_an_expired_key_starts_new_work(api, engineer, version, settings):
    client = api(engineer)
    client.post(reports_path(version), BODY, format="json", HTTP_IDEMPOTENCY_KEY="report-1")
    IdempotencyRecord.objects.update(
        created_at=timezone.now() - timedelta(hours=settings.GLASSBOX_IDEMPOTENCY_TTL_HOURS + 1)
    )

    again = client.post(reports_path(version), BODY, format="json", HTTP_IDEMPOTENCY_KEY="report-1")

    assert again.status_code == 202 and "Idempotent-Replayed" not in again
    assert ExplanationReport.objects.count() == 2


def test_keys_belong_to_their_user(api, engineer, engineer2, version):
    api(engineer).post(reports_path(version), BODY, format="json", HTTP_IDEMPOTENCY_KEY="shared")

    other = api(engineer2).post(reports_path(version), BODY, format="json", HTTP_IDEMPOTENCY_KEY="shared")

    assert other.status_code == 202 and "Idempotent-Replayed" not in other
    assert ExplanationReport.objects.count() == 2


@pytest.mark.parametrize("key", ["", "x" * 201, "naïve"])
def test_a_malformed_key_is_a_400(api, engineer, version, key):
    response = api(engineer).post(reports_path(version), BODY, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 400 and response.json()["code"] == "invalid_idempotency_key"
    assert not ExplanationReport.objects.exists()


def _dataset_upload(client, body: bytes, key: str):
    handle = io.BytesIO(body)
    handle.name = "holdout.csv"
    return client.post(
        "/api/v1/datasets/", {"file": handle, "name": "holdout"}, format="multipart", HTTP_IDEMPOTENCY_KEY=key
    )


def test_a_retried_multipart_upload_replays_and_another_file_conflicts(api, engineer):
    client = api(engineer)
    csv = "text,label\n很好,positive\n很差,negative\n".encode()

    first = _dataset_upload(client, csv, "upload-1")
    retry = _dataset_upload(client, csv, "upload-1")
    other = _dataset_upload(client, csv + "一般,negative\n".encode(), "upload-1")

    assert first.status_code == retry.status_code == 201 and retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    assert Dataset.objects.count() == 1


def test_a_retried_rollout_start_starts_one_rollout(api, engineer, engineer2, reviewer, sentiment_model):
    version = approve(ModelVersionFactory(model=sentiment_model), submitter=engineer2, reviewer=reviewer)
    client = api(engineer)
    path = f"/api/v1/models/{sentiment_model.name}/rollouts/"

    first = client.post(path, {"candidate": version.number}, format="json", HTTP_IDEMPOTENCY_KEY="deploy-1")
    retry = client.post(path, {"candidate": version.number}, format="json", HTTP_IDEMPOTENCY_KEY="deploy-1")

    assert first.status_code == retry.status_code == 201, first.json()
    assert retry.json() == first.json() and retry["Idempotent-Replayed"] == "true"
    assert Rollout.objects.count() == 1


def test_the_hourly_purge_forgets_every_expired_key_and_keeps_the_live_ones(engineer, engineer2, settings):
    from glassbox.tasks import purge_idempotency_records

    expired = timezone.now() - timedelta(hours=settings.GLASSBOX_IDEMPOTENCY_TTL_HOURS, minutes=1)
    for user, key in ((engineer, "old-1"), (engineer2, "old-2")):
        record = IdempotencyRecord.objects.create(user=user, key=key, endpoint="POST /x/", fingerprint="0" * 64)
        IdempotencyRecord.objects.filter(pk=record.pk).update(created_at=expired)
    IdempotencyRecord.objects.create(user=engineer, key="live", endpoint="POST /x/", fingerprint="0" * 64)

    assert purge_idempotency_records() == 2
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["live"]
    assert "glassbox-purge-idempotency-records" in settings.CELERY_BEAT_SCHEDULE
