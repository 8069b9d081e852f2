"""The browser side of the registry, through Django's test client with
sessions and CSRF enforced."""

import pytest
from django.test import Client

from registry.models import ModelVersion
from tests.conftest import page_client_for


@pytest.fixture
def uploaded_version(api, engineer, sentiment_model, demo_models):
    from tests.registry.test_version_upload import upload

    response = upload(
        api(engineer),
        "zh-sentiment",
        demo_models["sklearn_skops"].read_bytes(),
        "m.skops",
        "sklearn",
        description="<script>alert(1)</script>基线",
    )
    assert response.status_code == 201
    return ModelVersion.objects.get()


def test_login_page_and_redirect(db, engineer):
    client = Client()
    assert client.get("/models/").status_code == 302
    response = client.post("/login/", {"username": "erin", "password": "correct horse battery staple"})
    assert response.status_code == 302
    assert client.get("/models/").status_code == 200


def test_reviewer_reads_model_and_version_pages(reviewer, uploaded_version):
    client = page_client_for(reviewer)
    page = client.get("/models/").content.decode()
    assert "zh-sentiment" in page
    page = client.get("/models/zh-sentiment/").content.decode()
    assert "v1" in page and "Upload a version" not in page
    page = client.get("/models/zh-sentiment/versions/1/").content.decode()
    assert uploaded_version.artifact_sha256 in page
    assert "erin" in page and "negative" in page and "positive" in page
    # Uploaded text renders inert.
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_reviewer_and_manager_cannot_open_the_upload_form(reviewer, manager, sentiment_model):
    for user in (reviewer, manager):
        assert page_client_for(user).get("/models/zh-sentiment/upload/").status_code == 403


def test_outsider_cannot_read_pages(outsider, sentiment_model):
    assert page_client_for(outsider).get("/models/").status_code == 403
    assert page_client_for(outsider).get("/models/zh-sentiment/").status_code == 403


def test_engineer_uploads_through_the_form(engineer, sentiment_model, demo_models):
    client = page_client_for(engineer, enforce_csrf=True)
    form_page = client.get("/models/zh-sentiment/upload/")
    token = form_page.context["csrf_token"]
    with open(demo_models["sklearn_skops"], "rb") as artifact:
        response = client.post(
            "/models/zh-sentiment/upload/",
            {"artifact": artifact, "flavor": "sklearn", "metrics": '{"accuracy": 0.8}', "csrfmiddlewaretoken": token},
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    version = ModelVersion.objects.get()
    assert response["Location"] == version.get_absolute_url()
    assert version.metrics == {"accuracy": 0.8}


def test_upload_form_without_csrf_token_is_refused(engineer, sentiment_model, demo_models):
    client = page_client_for(engineer, enforce_csrf=True)
    with open(demo_models["sklearn_skops"], "rb") as artifact:
        response = client.post("/models/zh-sentiment/upload/", {"artifact": artifact, "flavor": "sklearn"})
    assert response.status_code == 403
    assert not ModelVersion.objects.exists()


def test_upload_form_shows_a_form_error_for_a_bad_archive(engineer, sentiment_model):
    import io

    client = page_client_for(engineer)
    bad = io.BytesIO(b"not an archive" * 50)
    bad.name = "model.zip"
    response = client.post("/models/zh-sentiment/upload/", {"artifact": bad, "flavor": "transformers"})
    assert response.status_code == 400
    assert "not a zip, tar or tar.gz archive" in response.content.decode()
    assert not ModelVersion.objects.exists()


def test_dataset_pages(api, engineer, reviewer, demo_models):
    import io

    handle = io.BytesIO(demo_models["holdout_csv"].read_bytes())
    handle.name = "holdout.csv"
    dataset_id = (
        api(engineer).post("/api/v1/datasets/", {"file": handle, "name": "holdout"}, format="multipart").json()["id"]
    )
    client = page_client_for(reviewer)
    assert "holdout" in client.get("/datasets/").content.decode()
    page = client.get(f"/datasets/{dataset_id}/").content.decode()
    assert "negative" in page and "First rows" in page
