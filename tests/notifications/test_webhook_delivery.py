"""Webhook deliveries against a real HTTP receiver on loopback: the signed
payload, retries with exponential backoff, and every way a target can
misbehave ending as a failed attempt in the log, never a stuck worker."""

import importlib.util
import json
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from governance import services as review_services
from governance.models import AuditEvent
from notifications import services
from notifications.models import WebhookDelivery
from tests.conftest import ModelVersionFactory, RegisteredModelFactory

RECEIVER_SCRIPT = Path(django_settings.BASE_DIR) / "scripts" / "webhook_receiver.py"


def example_receiver():
    spec = importlib.util.spec_from_file_location("webhook_receiver", RECEIVER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def model(engineer):
    return RegisteredModelFactory(name="zh-hooks", created_by=engineer)


@pytest.fixture
def subscription(engineer, model, receiver):
    return services.webhook_create(actor=engineer, url=receiver.url, event_types=["review.opened"], model=model)


def _opened_review(model, engineer, engineer2) -> AuditEvent:
    version = ModelVersionFactory(model=model, created_by=engineer)
    review_services.review_submit(actor=engineer2, version=version)
    return AuditEvent.objects.filter(action="review.open").latest("id")


@pytest.fixture
def delivery(subscription, model, engineer, engineer2) -> WebhookDelivery:
    event = _opened_review(model, engineer, engineer2)
    _, (delivery_id,) = services.audit_event_dispatch(event_id=event.pk)
    return WebhookDelivery.objects.get(pk=delivery_id)


def test_a_delivery_is_signed_over_timestamp_and_body(delivery, subscription, receiver):
    before = int(time.time())

    assert services.webhook_deliver(delivery_id=delivery.pk) is None

    (request,) = receiver.requests
    header = request.headers["X-Glassbox-Signature"]
    t, v1 = (part.split("=", 1)[1] for part in header.split(","))
    assert header.startswith("t=") and ",v1=" in header and int(t) >= before
    receiver_module = example_receiver()
    receiver_module.verify(header, request.body, subscription.secret)  # raises if it does not verify
    with pytest.raises(receiver_module.SignatureError):
        receiver_module.verify(header, request.body + b" ", subscription.secret)
    with pytest.raises(receiver_module.SignatureError):
        receiver_module.verify(header, request.body, "whsec_someone-else")
    payload = request.json()
    assert payload["type"] == "review.opened" and payload["model"] == "zh-hooks" and payload["version"] == 1
    assert payload["actor"] == "eli" and payload["audit"]["action"] == "review.open"
    assert request.headers["X-Glassbox-Event"] == "review.opened"
    assert request.path == "/hooks/glassbox"
    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and delivery.attempts == 1 and delivery.response_code == 204
    assert delivery.latency_ms is not None and delivery.latency_ms >= 0


def test_only_subscribed_types_and_models_are_delivered(subscription, engineer, engineer2, receiver, model):
    other = RegisteredModelFactory(name="zh-other", created_by=engineer)
    elsewhere = _opened_review(other, engineer, engineer2)
    rollout_like = AuditEvent.objects.filter(action="version.submit").latest("id")

    assert services.audit_event_dispatch(event_id=elsewhere.pk)[1] == []
    assert services.audit_event_dispatch(event_id=rollout_like.pk) == ([], [])
    here = _opened_review(model, engineer, engineer2)
    assert len(services.audit_event_dispatch(event_id=here.pk)[1]) == 1
    assert services.audit_event_dispatch(event_id=here.pk)[1] == []  # a second dispatch adds nothing


def test_failures_are_retried_with_exponential_backoff_then_given_up(delivery, receiver, settings):
    settings.GLASSBOX_WEBHOOK_MAX_ATTEMPTS = 4
    settings.GLASSBOX_WEBHOOK_BACKOFF_SECONDS = 10
    receiver.answers = [(500, {"body": b"oops"})]

    waits = [services.webhook_deliver(delivery_id=delivery.pk) for _ in range(4)]

    delivery.refresh_from_db()
    assert waits == [10, 20, 40, None]
    assert delivery.status == "failed" and delivery.attempts == 4 and delivery.response_code == 500
    assert delivery.error == "answered 500" and len(receiver.requests) == 4
    # A finished delivery is not sent again by a duplicate task.
    assert services.webhook_deliver(delivery_id=delivery.pk) is None and len(receiver.requests) == 4


def test_a_redirect_is_not_followed(delivery, receiver):
    receiver.answers = [(302, {"location": "http://169.254.169.254/latest/meta-data/"})]

    services.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert len(receiver.requests) == 1
    assert delivery.status == "pending" and delivery.response_code == 302
    assert "redirects are not followed" in delivery.error


def test_a_slow_target_times_out(delivery, receiver, settings):
    settings.GLASSBOX_WEBHOOK_TIMEOUT = 0.5
    receiver.answers = [(200, {"sleep": 3})]

    retry_in = services.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert retry_in is not None and delivery.status == "pending"
    assert "timed out" in delivery.error or "TimeoutError" in delivery.error, delivery.error


def test_a_huge_answer_is_cut_off(delivery, receiver, settings):
    settings.GLASSBOX_WEBHOOK_MAX_RESPONSE_BYTES = 1024
    receiver.answers = [(200, {"body": b"x" * 200_000})]

    services.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == "pending" and "larger than 1024 bytes" in delivery.error


def test_an_unreachable_target_is_a_failed_attempt(delivery, subscription, receiver):
    type(subscription).objects.filter(pk=subscription.pk).update(url="http://127.0.0.1:9/closed")

    retry_in = services.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert retry_in is not None and delivery.attempts == 1
    assert "ConnectionRefusedError" in delivery.error and delivery.response_code is None


def test_the_target_is_checked_again_at_delivery_time(delivery, receiver, settings):
    """Accepted while private targets were allowed (or while its name
    pointed elsewhere: DNS rebinding), refused when it is time to send."""
    settings.GLASSBOX_WEBHOOK_ALLOW_PRIVATE = False

    retry_in = services.webhook_deliver(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert retry_in is None and delivery.status == "failed"
    assert "loopback" in delivery.error
    assert receiver.requests == []


def test_the_example_receiver_accepts_signed_deliveries_and_refuses_replays(delivery, subscription, settings):
    """scripts/webhook_receiver.py as a real server: a delivery from
    Glassbox goes through; the same request replayed 6 minutes later, a
    forged signature and an unsigned request are refused with 400."""
    import http.client
    import threading
    from http.server import ThreadingHTTPServer

    module = example_receiver()
    seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.make_handler(subscription.secret, seen))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    type(subscription).objects.filter(pk=subscription.pk).update(url=f"http://127.0.0.1:{port}/")
    try:
        services.webhook_deliver(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        assert delivery.status == "succeeded" and delivery.response_code == 204
        assert [event["type"] for event in seen] == ["review.opened"]

        body = delivery.body.encode()
        old = int(time.time()) - 360
        from notifications.webhook_http import sign

        def post(headers) -> tuple[int, str]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/", body=body, headers={"Content-Type": "application/json", **headers})
            response = conn.getresponse()
            return response.status, response.read().decode()

        replay = post({"X-Glassbox-Signature": sign(subscription.secret, body, old)})
        forged = post({"X-Glassbox-Signature": sign("whsec_guess", body, int(time.time()))})
        unsigned = post({})
        assert replay[0] == 400 and "replays are refused" in replay[1]
        assert forged == (400, "signature does not match")
        assert unsigned == (400, "no signature header")
        assert len(seen) == 1
        assert json.loads(body)["id"] == seen[0]["id"]
    finally:
        server.shutdown()
        server.server_close()
