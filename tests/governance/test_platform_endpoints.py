"""Token auth, the OpenAPI schema and the health check."""

import pytest


def test_token_for_valid_credentials(client, engineer):
    response = client.post("/api/v1/auth/token/", {"username": "erin", "password": "correct horse battery staple"})
    assert response.status_code == 200
    token = response.json()["token"]
    listed = client.get("/api/v1/models/", HTTP_AUTHORIZATION=f"Token {token}")
    assert listed.status_code == 200


def test_token_for_wrong_password_is_400_with_detail(client, engineer):
    response = client.post("/api/v1/auth/token/", {"username": "erin", "password": "wrong"})
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Unable to log in with the given username and password.",
        "code": "invalid_credentials",
    }


def test_bogus_token_is_401(client, db):
    response = client.get("/api/v1/models/", HTTP_AUTHORIZATION="Token deadbeef")
    assert response.status_code == 401
    assert response.json()["detail"]


def test_openapi_schema_lists_the_stable_paths(client, db):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"] if response["Content-Type"].startswith("application/json") else None
    if paths is None:
        import yaml

        paths = yaml.safe_load(response.content)["paths"]
    for path in [
        "/api/v1/models/",
        "/api/v1/models/{name}/",
        "/api/v1/models/{name}/versions/",
        "/api/v1/models/{name}/versions/{number}/",
        "/api/v1/datasets/",
        "/api/v1/auth/token/",
    ]:
        assert path in paths
    assert client.get("/api/docs/").status_code == 200


def test_livez_answers_without_touching_dependencies(client, settings):
    # A dead broker (and no database access: no django_db mark) does not make
    # the process look dead, only unready.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_and_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "storage": "ok"}


@pytest.mark.django_db
def test_readyz_reports_a_dead_broker(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["broker"].startswith("error")


@pytest.mark.django_db
def test_healthz_checks_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "storage": "ok"}


@pytest.mark.django_db
def test_healthz_reports_a_dead_broker(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"].startswith("error")
    assert response.json()["database"] == "ok"
