"""When the database cannot be reached the API answers 503 with a JSON
`detail` and Retry-After (not a 500 page), and serves again as soon as the
database is back: each request opens its connection afresh."""

import socket

import pytest
from django.db import connection

from tests.conftest import api_client_for, page_client_for


def _closed_port() -> int:
    # A port nothing listens on: bind, read the number, close.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def database_unreachable(committed_db):
    """Point this process's connection at a closed port (a real failed
    connect, as when PostgreSQL restarts), then put it back."""
    real_port = connection.settings_dict["PORT"]

    def cut():
        connection.close()
        connection.settings_dict["PORT"] = str(_closed_port())

    def restore():
        connection.close()
        connection.settings_dict["PORT"] = real_port

    yield cut, restore
    restore()


def test_api_answers_503_json_while_the_database_is_down_then_recovers(engineer, database_unreachable):
    cut, restore = database_unreachable
    client = api_client_for(engineer)
    assert client.get("/api/v1/models/").status_code == 200

    cut()
    down = client.get("/api/v1/models/")

    assert down.status_code == 503
    assert down["Content-Type"] == "application/json"
    assert down.json()["detail"] == "The database is unavailable; retry shortly."
    assert down.json()["request_id"] == down["X-Request-ID"]
    assert int(down["Retry-After"]) > 0

    restore()
    assert client.get("/api/v1/models/").status_code == 200


def test_healthz_reports_the_outage_as_503(engineer, database_unreachable):
    cut, _ = database_unreachable
    cut()

    response = api_client_for(None).get("/healthz")

    assert response.status_code == 503


def test_pages_answer_503_while_the_database_is_down(engineer, database_unreachable):
    cut, restore = database_unreachable
    client = page_client_for(engineer)
    cut()

    page = client.get("/models/")

    assert page.status_code == 503
    assert b"briefly unavailable" in page.content
    restore()
    assert client.get("/models/").status_code == 200
