"""The webhook subscription API: who may subscribe to what, the secret
shown once, bad input refused with a 4xx and nothing stored."""

import pytest

from governance.models import AuditEvent
from notifications.models import WebhookSubscription
from tests.conftest import RegisteredModelFactory, UserFactory

URL = "/api/v1/webhooks/"


@pytest.fixture
def admin(db):
    return UserFactory(username="ada", role="admin")


@pytest.fixture
def model(engineer):
    return RegisteredModelFactory(name="zh-hooks", created_by=engineer)


def _subscribe(api, user, url, *, events=("rollout.paused",), model="zh-hooks"):
    return api(user).post(URL, {"url": url, "events": list(events), "model": model}, format="json")


def test_an_engineer_subscribes_to_a_model_and_sees_the_secret_only_then(api, engineer, model, receiver):
    response = _subscribe(api, engineer, receiver.url, events=["rollout.paused", "alert.raised"])

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 30
    assert body["model"] == "zh-hooks" and body["events"] == ["rollout.paused", "alert.raised"]
    listed = api(engineer).get(URL).json()["results"]
    one = api(engineer).get(f"{URL}{body['id']}/").json()
    assert [row["id"] for row in listed] == [body["id"]]
    assert "secret" not in listed[0] and "secret" not in one
    event = AuditEvent.objects.filter(action="webhook.create").get()
    assert body["secret"] not in str(event.changes) + str(event.detail)


def test_unknown_event_types_are_refused(api, engineer, model, receiver):
    response = _subscribe(api, engineer, receiver.url, events=["rollout.paused", "rollout.exploded"])

    assert response.status_code == 400
    assert response.json()["code"] == "unknown_event_type"
    assert "rollout.exploded" in response.json()["detail"]
    assert not WebhookSubscription.objects.exists()


@pytest.mark.parametrize(
    "url, reason",
    [
        ("ftp://example.com/hook", "Only http and https"),
        ("file:///etc/passwd", "Only http and https"),
        ("gopher://127.0.0.1:6379/", "Only http and https"),
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://100.64.0.1/hook", "not a public address"),
        ("http://user:pass@example.com/hook", "user name or password"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_unsafe_targets_are_refused(api, engineer, model, settings, url, reason):
    settings.GLASSBOX_WEBHOOK_ALLOW_PRIVATE = False

    response = _subscribe(api, engineer, url)

    assert response.status_code == 400, response.json()
    assert reason in response.json()["detail"]
    assert not WebhookSubscription.objects.exists()


def test_metadata_addresses_stay_refused_where_private_targets_are_allowed(api, engineer, model, settings):
    settings.GLASSBOX_WEBHOOK_ALLOW_PRIVATE = True

    assert _subscribe(api, engineer, "http://127.0.0.1:9/hook").status_code == 201
    response = _subscribe(api, engineer, "http://169.254.169.254/latest/meta-data/")
    assert response.status_code == 400 and "metadata" in response.json()["detail"]


def test_only_admins_subscribe_to_every_model(api, engineer, admin, receiver):
    refused = _subscribe(api, engineer, receiver.url, model=None)
    allowed = _subscribe(api, admin, receiver.url, model=None)

    assert refused.status_code == 403 and "Only admins" in refused.json()["detail"]
    assert allowed.status_code == 201 and allowed.json()["model"] is None
    denied = AuditEvent.objects.get(action="webhook.create", outcome="denied")
    assert denied.actor_username == "erin"
    # An engineer neither lists nor reads an all-models subscription.
    assert api(engineer).get(URL).json()["results"] == []
    assert api(engineer).get(f"{URL}{allowed.json()['id']}/").status_code == 404
    assert api(engineer).delete(f"{URL}{allowed.json()['id']}/").status_code == 404


def test_reviewers_and_managers_may_not_subscribe(api, reviewer, manager, model, receiver):
    for user in (reviewer, manager):
        response = _subscribe(api, user, receiver.url)
        assert response.status_code == 403, response.json()
    assert not WebhookSubscription.objects.exists()


def test_an_unknown_model_is_404(api, engineer, receiver):
    assert _subscribe(api, engineer, receiver.url, model="nope").status_code == 404


def test_delete_removes_the_subscription_and_is_audited(api, engineer, model, receiver):
    created = _subscribe(api, engineer, receiver.url).json()

    response = api(engineer).delete(f"{URL}{created['id']}/")

    assert response.status_code == 204
    assert not WebhookSubscription.objects.exists()
    assert api(engineer).get(f"{URL}{created['id']}/deliveries/").status_code == 404
    assert AuditEvent.objects.filter(action="webhook.delete", model_name="zh-hooks").count() == 1


def test_deliveries_page_with_a_cursor(api, engineer, model, receiver):
    from notifications.models import WebhookDelivery

    created = _subscribe(api, engineer, receiver.url).json()
    sub = WebhookSubscription.objects.get(pk=created["id"])
    for event_id in range(1, 4):
        WebhookDelivery.objects.create(
            subscription=sub, audit_event_id=event_id, event_type="rollout.paused", body="{}"
        )

    first = api(engineer).get(f"{URL}{sub.pk}/deliveries/?page_size=2").json()
    second = api(engineer).get(first["next"]).json()
    back = api(engineer).get(second["previous"]).json()

    assert [row["audit_event_id"] for row in first["results"]] == [3, 2] and first["previous"] is None
    assert [row["audit_event_id"] for row in second["results"]] == [1] and second["next"] is None
    assert [row["audit_event_id"] for row in back["results"]] == [3, 2]
    # The platform's one convention (glassbox/pagination.py): above 200 counts as 200.
    clamped = api(engineer).get(f"{URL}{sub.pk}/deliveries/?page_size=999")
    assert clamped.status_code == 200 and len(clamped.json()["results"]) == 3


def test_the_webhook_list_pages_with_a_cursor_over_the_subscriptions_the_caller_may_manage(
    api, engineer, model, receiver
):
    ids = [_subscribe(api, engineer, receiver.url).json()["id"] for _ in range(3)]

    first = api(engineer).get(f"{URL}?page_size=2").json()
    second = api(engineer).get(first["next"]).json()

    assert [row["id"] for row in first["results"] + second["results"]] == sorted(ids, reverse=True)
    assert second["next"] is None and second["previous"] is not None


def test_empty_paging_parameters_are_refused(api, engineer):
    response = api(engineer).get("/api/v1/webhooks/?cursor=&page_size=")

    assert response.status_code == 400
    assert response.json()["code"] in {"invalid_cursor", "invalid_page_size"}
