"""Sign-in is rate-limited: a client that keeps guessing passwords is refused
with 429 before the password is even checked, on the token API and on the
login page alike, and each refusal is on the audit trail."""

import pytest
from django.core.cache import cache
from django.test import Client, override_settings

from governance.models import AuditEvent

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


def token_call(client: Client, username: str, password: str, ip: str = "10.1.1.1"):
    return client.post(
        "/api/v1/auth/token/",
        {"username": username, "password": password},
        content_type="application/json",
        REMOTE_ADDR=ip,
    )


@override_settings(GLASSBOX_SIGNIN_MAX_FAILURES=3)
def test_token_api_refuses_a_guesser_after_the_budget(engineer):
    client = Client()
    for _ in range(3):
        assert token_call(client, engineer.username, "wrong").status_code == 400

    refused = token_call(client, engineer.username, PASSWORD)

    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.json()["detail"]
    assert int(refused["Retry-After"]) > 0
    denied = AuditEvent.objects.filter(action="auth.login", outcome="denied", detail__reason="too many failed sign-ins")
    assert denied.count() == 1


@override_settings(GLASSBOX_SIGNIN_MAX_FAILURES=3)
def test_the_budget_is_per_username_too_so_rotating_addresses_does_not_help(engineer):
    client = Client()
    for n in range(3):
        token_call(client, engineer.username, "wrong", ip=f"10.2.0.{n}")

    assert token_call(client, engineer.username, PASSWORD, ip="10.2.0.99").status_code == 429


@override_settings(GLASSBOX_SIGNIN_MAX_FAILURES=3)
def test_other_users_and_addresses_are_not_held_back(engineer, reviewer):
    client = Client()
    for _ in range(3):
        token_call(client, engineer.username, "wrong", ip="10.3.0.1")

    assert token_call(client, reviewer.username, PASSWORD, ip="10.3.0.2").status_code == 200


@override_settings(GLASSBOX_SIGNIN_MAX_FAILURES=2)
def test_login_page_answers_429_with_a_form_error(engineer):
    client = Client()
    for _ in range(2):
        page = client.post("/login/", {"username": engineer.username, "password": "wrong"})
        assert page.status_code == 200  # the form again, with its error

    page = client.post("/login/", {"username": engineer.username, "password": PASSWORD})

    assert page.status_code == 429
    assert "Too many failed sign-ins" in page.content.decode()
    assert "_auth_user_id" not in client.session  # not signed in, even with the right password


def test_a_correct_password_within_budget_signs_in(engineer):
    client = Client()
    token_call(client, engineer.username, "wrong")

    assert token_call(client, engineer.username, PASSWORD).status_code == 200
    assert client.post("/login/", {"username": engineer.username, "password": PASSWORD}).status_code == 302


def test_login_page_keeps_csrf(engineer):
    client = Client(enforce_csrf_checks=True)
    assert client.post("/login/", {"username": engineer.username, "password": PASSWORD}).status_code == 403
