"""Fixtures shared by the explanation tests."""

import pytest

from explanations import services
from tests.explanations.reporting import stored_version


@pytest.fixture
def no_broker(monkeypatch):
    """Reports are created but never sent to a worker."""
    monkeypatch.setattr(services, "_enqueue", lambda task, report_id: None)


@pytest.fixture
def version(engineer):
    return stored_version(uploader=engineer)
