"""A token scoped to `predict` and `feedback` on one model does nothing
else: every route of the URLconf (read off the resolver, as the
route-permission table does, so a new route is covered without touching
this file) is called with it, with GET and every write method it takes.

Only predict and feedback on the named model get past the door. Every
other API route answers 403 with a `code`; a route outside the API (pages,
probes) does not read tokens at all, so the token gets exactly what an
anonymous caller gets there."""

import pytest

from governance.accounts import token_create
from governance.models import AuditEvent
from tests.conftest import RegisteredModelFactory
from tests.security.test_route_permissions import World, _methods, _routes

OPEN = {"api/v1/models/<str:name>/predict/": "POST", "api/v1/models/<str:name>/feedback/": "POST"}


# Plain Django views that read API tokens themselves (rollouts/metrics.py).
TOKEN_READING_VIEWS = {"metrics"}


def _reads_tokens(route) -> bool:
    # A DRF view with authentication classes: the token is looked at there.
    if route.route in TOKEN_READING_VIEWS:
        return True
    view = getattr(route.callback, "cls", None)
    return view is not None and bool(view().get_authenticators())


def _call(world, client, method: str, route_key: str, path: str):
    from django.db import transaction

    body = world.body_for(route_key) if method != "GET" else {}
    with transaction.atomic():
        send = getattr(client, method.lower())
        kind = "json" if body else "multipart"
        response = send(path, body, format=kind) if method != "GET" else send(path)
        transaction.set_rollback(True)
    return response


def _code(response) -> str | None:
    body = response.json()
    return body.get("code") if body.get("detail") else None


@pytest.fixture
def world(db):
    world = World()
    RegisteredModelFactory(name="zh-other", created_by=world.users["maintainer"])
    return world


def test_a_scoped_token_reaches_predict_and_feedback_on_its_model_and_nothing_else(world):
    from rest_framework.test import APIClient

    engineer = world.users["maintainer"]  # maintainers hand out client keys
    _, key = token_create(actor=engineer, name="shop", scopes=["predict", "feedback"], model_names=["zh-sentiment"])
    scoped, anonymous = APIClient(), APIClient()
    scoped.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    scoped.raise_request_exception = anonymous.raise_request_exception = False

    through, wrong = [], []
    for route_key, route in sorted(_routes().items()):
        path = world.path_of(route)
        for method in _methods(route):
            response = _call(world, scoped, method, route_key, path)
            if route_key in OPEN and method != OPEN[route_key]:
                if response.status_code != 405:
                    wrong.append(f"{method} {route_key}: {response.status_code}, expected 405")
            elif OPEN.get(route_key) == method:
                # Past the door: the empty body is what is refused.
                through.append(route_key)
                if response.status_code != 400:
                    wrong.append(f"{method} {route_key}: {response.status_code}, expected 400 (empty input)")
                other = _call(world, scoped, method, route_key, path.replace("zh-sentiment", "zh-other"))
                if (other.status_code, other.json().get("code")) != (403, "token_model"):
                    wrong.append(f"{method} {route_key} on another model: {other.status_code}")
            elif _reads_tokens(route):
                # The API docs page (HTML) refuses with its own page, without the JSON body.
                code = _code(response) if response["Content-Type"].startswith("application/json") else "token_scope"
                if response.status_code != 403 or code != "token_scope":
                    wrong.append(f"{method} {route_key}: {response.status_code} {code}, expected 403 token_scope")
            else:
                expected = _call(world, anonymous, method, route_key, path).status_code
                if response.status_code != expected:
                    wrong.append(f"{method} {route_key}: {response.status_code}, anonymous gets {expected}")

    assert not wrong, "\n".join(wrong)
    assert sorted(through) == sorted(OPEN)
    # Refusals are in the trail, each with its reason and the token that was used
    # (the sweep above rolled its calls back, its refusals with them).
    scoped.get("/api/v1/models/")
    scoped.post("/api/v1/models/zh-other/predict/", {"inputs": ["很好"]}, format="json")
    refusals = AuditEvent.objects.filter(action="token.refuse", outcome="denied", object_label="shop")
    assert refusals.filter(detail__reason="token_scope").exists()
    assert refusals.filter(detail__reason="token_model", model_name="zh-other").exists()
