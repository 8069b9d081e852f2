"""End to end through a real Celery worker: a review opened over the API
reaches the reviewers' mailboxes on a real SMTP server and a subscriber's
receiver, which fails twice first (retried with backoff by the worker)."""

import pytest

from notifications.models import Notification, WebhookDelivery
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, wait_for
from tests.notifications.test_webhook_delivery import example_receiver

pytestmark = pytest.mark.worker


def test_a_submitted_version_reaches_reviewers_and_subscribers_through_the_worker(
    worker_pool, smtp_server, receiver, api, engineer, engineer2, reviewer
):
    model = RegisteredModelFactory(name="zh-e2e", created_by=engineer)
    version = ModelVersionFactory(model=model, created_by=engineer)
    created = api(engineer).post(
        "/api/v1/webhooks/", {"url": receiver.url, "events": ["review.opened"], "model": "zh-e2e"}, format="json"
    )
    assert created.status_code == 201, created.json()
    receiver.answers = [(500, {}), (503, {}), (204, {})]
    worker_pool.start(
        "notify",
        env={
            **smtp_server.env(),
            "GLASSBOX_WEBHOOK_ALLOW_PRIVATE": "1",
            "GLASSBOX_WEBHOOK_BACKOFF_SECONDS": "0.2",
            "GLASSBOX_NOTIFICATION_BACKOFF_SECONDS": "0.2",
        },
    )

    response = api(engineer2).post(f"/api/v1/models/zh-e2e/versions/{version.number}/submit/")
    assert response.status_code in (200, 201), response.json()

    wait_for(lambda: smtp_server.inbox.to("rita@example.test"), what="the reviewer's e-mail", timeout=60)
    delivery = wait_for(
        lambda: WebhookDelivery.objects.filter(status="succeeded").first(),
        what="the webhook delivery",
        timeout=60,
    )
    assert delivery.attempts == 3 and delivery.response_code == 204
    assert [r.json()["type"] for r in receiver.requests] == ["review.opened"] * 3
    # Every attempt carries a signature that verifies with the secret shown at subscription.
    verify = example_receiver().verify
    for request in receiver.requests:
        verify(request.headers["X-Glassbox-Signature"], request.body, created.json()["secret"])
    note = Notification.objects.get(user=reviewer)
    assert note.status == "sent" and note.attempts == 1
    assert smtp_server.inbox.to("rita@example.test")[0]["Subject"] == "[Glassbox] Review requested: zh-e2e v1"
    assert "notify" in worker_pool.processes and "deliver_webhook" in worker_pool.log("notify")
