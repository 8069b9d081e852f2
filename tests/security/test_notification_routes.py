"""The notification and webhook routes, persona by persona - kept apart from
the main table (test_route_permissions.EXPECTED), which is being rewritten
for teams; that module's completeness check reads these rows too
(ALL_EXPECTED), so a route missing here still fails it.

Personas as there, plus an admin (webhooks for every model are theirs)."""

import pytest
from django.db import transaction
from django.test import Client

from notifications import services
from notifications.models import WebhookSubscription
from tests.conftest import RegisteredModelFactory, UserFactory, api_client_for

PERSONAS = ("anonymous", "outsider", "engineer", "reviewer", "manager", "admin")

# route -> method -> answers of (anonymous, outsider, engineer, reviewer, manager, admin)
NOTIFICATION_EXPECTED_ALL: dict[str, dict[str, tuple[int, ...]]] = {
    "api/v1/webhooks/": {"GET": (401, 403, 200, 403, 403, 200), "POST": (401, 403, 201, 403, 403, 201)},
    "api/v1/webhooks/<int:pk>/": {
        "GET": (401, 403, 200, 403, 403, 200),
        "DELETE": (401, 403, 204, 403, 403, 204),
    },
    "api/v1/webhooks/<int:pk>/deliveries/": {"GET": (401, 403, 200, 403, 403, 200)},
    "account/notifications/": {"GET": (302, 403, 200, 200, 200, 200), "POST": (302, 403, 302, 302, 302, 302)},
}
# The five personas of the main table.
NOTIFICATION_EXPECTED = {
    route: {method: answers[:5] for method, answers in methods.items()}
    for route, methods in NOTIFICATION_EXPECTED_ALL.items()
}


@pytest.fixture
def world(db, settings):
    settings.GLASSBOX_WEBHOOK_ALLOW_PRIVATE = True
    users = {
        "anonymous": None,
        "outsider": UserFactory(username="olga"),
        "engineer": UserFactory(username="erin", role="engineer"),
        "reviewer": UserFactory(username="rita", role="reviewer"),
        "manager": UserFactory(username="max", role="manager"),
        "admin": UserFactory(username="ada", role="admin"),
    }
    model = RegisteredModelFactory(name="zh-sentiment", created_by=users["engineer"])
    sub = services.webhook_create(
        actor=users["engineer"], url="http://127.0.0.1:9/hook", event_types=["rollout.paused"], model=model
    )
    return users, sub


def _call(user, method: str, path: str) -> int:
    with transaction.atomic():
        if path.startswith("/api/"):
            client = api_client_for(user)
            client.raise_request_exception = False
            body = {"url": "http://127.0.0.1:9/h", "events": ["alert.raised"], "model": "zh-sentiment"}
            send = getattr(client, method.lower())
            status = send(path, body, format="json").status_code if method == "POST" else send(path).status_code
        else:
            client = Client(raise_request_exception=False)
            if user is not None:
                client.force_login(user)
            status = client.get(path).status_code if method == "GET" else client.post(path, {}).status_code
        transaction.set_rollback(True)
    return status


@pytest.mark.parametrize("route", sorted(NOTIFICATION_EXPECTED_ALL))
def test_notification_route_answers_each_persona_as_expected(world, route):
    users, sub = world
    path = "/" + route.replace("<int:pk>", str(sub.pk))
    observed = {
        method: tuple(_call(users[persona], method, path) for persona in PERSONAS)
        for method in NOTIFICATION_EXPECTED_ALL[route]
    }
    assert observed == NOTIFICATION_EXPECTED_ALL[route], (path, observed)
    assert WebhookSubscription.objects.filter(pk=sub.pk).exists()  # every write was rolled back
