"""Personal API tokens as the API conventions want them: several per user,
each with its own key and last use; a maximum life (GLASSBOX_TOKEN_MAX_DAYS)
that bounds every token, the password exchange's included; admins list and
revoke anyone's."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from governance.accounts import key_hash
from governance.models import ApiToken, AuditEvent
from tests.conftest import UserFactory, api_client_for


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def admin(db):
    # The admin role (a group), not a Django superuser.
    return UserFactory(username="ada", role="admin", team=False)


def test_a_user_holds_several_tokens_each_with_its_own_key_and_last_use(engineer):
    client = api_client_for(engineer)
    keys = {}
    for name in ("laptop", "ci", "notebook"):
        response = client.post("/api/v1/auth/tokens/", {"name": name}, format="json")
        assert response.status_code == 201, response.json()
        keys[name] = response.json()["key"]

    assert client_with(keys["ci"]).get("/api/v1/models/").status_code == 200

    listed = {t["name"]: t for t in client.get("/api/v1/auth/tokens/").json()["results"]}
    assert {"laptop", "ci", "notebook"} <= set(listed)
    assert listed["ci"]["last_used_at"] is not None
    assert listed["laptop"]["last_used_at"] is None and listed["notebook"]["last_used_at"] is None
    assert all(t["user"] == "erin" for t in listed.values())
    assert len(set(keys.values())) == 3


def test_a_maximum_life_bounds_every_token(engineer, settings):
    settings.GLASSBOX_TOKEN_MAX_DAYS = 30
    client = api_client_for(engineer)

    unbounded = client.post("/api/v1/auth/tokens/", {"name": "forever"}, format="json")
    too_far = client.post(
        "/api/v1/auth/tokens/",
        {"name": "later", "expires_at": (timezone.now() + timedelta(days=31)).isoformat()},
        format="json",
    )
    within = client.post(
        "/api/v1/auth/tokens/",
        {"name": "soon", "expires_at": (timezone.now() + timedelta(days=29)).isoformat()},
        format="json",
    )

    assert unbounded.status_code == 201
    expires = ApiToken.objects.get(pk=unbounded.json()["id"]).expires_at
    assert timedelta(days=29, hours=23) < expires - timezone.now() <= timedelta(days=30)
    assert too_far.status_code == 400 and too_far.json()["code"] == "token_expiry_too_far"
    assert not ApiToken.objects.filter(name="later").exists()
    assert within.status_code == 201


def test_the_password_exchange_issues_a_token_within_the_maximum_life(engineer, settings):
    settings.GLASSBOX_TOKEN_MAX_DAYS = 7
    engineer.set_password("correct horse battery staple")
    engineer.save()

    response = APIClient().post("/api/v1/auth/token/", {"username": "erin", "password": "correct horse battery staple"})

    token = ApiToken.objects.get(key_hash=key_hash(response.json()["token"]))
    assert token.name == "password sign-in" and token.expires_at <= timezone.now() + timedelta(days=7)


def test_an_admin_lists_and_revokes_another_users_token(engineer, admin):
    response = api_client_for(engineer).post("/api/v1/auth/tokens/", {"name": "leaked"}, format="json")
    token_id, key = response.json()["id"], response.json()["key"]

    listed = api_client_for(admin).get("/api/v1/auth/tokens/?user=erin").json()["results"]
    assert token_id in [t["id"] for t in listed]

    revoked = api_client_for(admin).delete(f"/api/v1/auth/tokens/{token_id}/")

    assert revoked.status_code == 204
    assert client_with(key).get("/api/v1/models/").json()["code"] == "token_revoked"
    event = AuditEvent.objects.get(action="token.revoke", object_id=str(token_id))
    assert (event.actor_username, event.detail["owner"]) == ("ada", "erin")


def test_only_admins_list_another_users_tokens(engineer, reviewer):
    response = api_client_for(reviewer).get("/api/v1/auth/tokens/?user=erin")

    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
