"""Sign-in is rate-limited: a client that keeps guessing passwords is refused
with 429 before the password is even checked, on the token API and on the
login page alike, and each refusal is on the audit trail. Failures count per
(username, address), per address and - with a much higher ceiling - per
username, where the address is the client's as the trusted proxies report it."""

import pytest
from django.core.cache import cache
from django.test import Client, RequestFactory, override_settings

from glassbox.middleware import client_address
from governance.models import AuditEvent

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


def token_call(client: Client, username: str, password: str, ip: str = "10.1.1.1", forwarded_for: str | None = None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for is not None else {}
    return client.post(
        "/api/v1/auth/token/",
        {"username": username, "password": password},
        content_type="application/json",
        REMOTE_ADDR=ip,
        **headers,
    )


def refusals():
    return AuditEvent.objects.filter(action="auth.login", outcome="denied", detail__reason="too many failed sign-ins")


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


@override_settings(GLASSBOX_SIGNIN_MAX_FAILURES=3, GLASSBOX_SIGNIN_MAX_FAILURES_PER_USERNAME=6)
def test_the_budget_is_per_username_too_so_rotating_addresses_does_not_help(engineer):
    client = Client()
    for n in range(6):
        assert token_call(client, engineer.username, "wrong", ip=f"10.2.0.{n}").status_code == 400

    assert token_call(client, engineer.username, PASSWORD, ip="10.2.0.99").status_code == 429


@override_settings(GLASSBOX_SIGNIN_MAX_FAILURES=3, GLASSBOX_SIGNIN_MAX_FAILURES_PER_ADDRESS=5)
def test_one_address_rotating_usernames_is_held_back(engineer):
    client = Client()
    for n in range(5):
        assert token_call(client, f"someone-{n}", "wrong", ip="10.2.1.1").status_code == 400

    assert token_call(client, engineer.username, PASSWORD, ip="10.2.1.1").status_code == 429
    assert token_call(client, engineer.username, PASSWORD, ip="10.2.1.2").status_code == 200


@override_settings(
    GLASSBOX_SIGNIN_MAX_FAILURES=3,
    GLASSBOX_SIGNIN_MAX_FAILURES_PER_ADDRESS=5,
    GLASSBOX_SIGNIN_MAX_FAILURES_PER_USERNAME=10,
)
def test_a_stranger_cannot_lock_a_reviewer_out_from_another_address(reviewer):
    stranger = Client()
    answers = [token_call(stranger, reviewer.username, f"guess-{n}", ip="10.2.2.66").status_code for n in range(30)]

    assert answers == [400] * 3 + [429] * 27  # the stranger is stopped...
    # ...and the reviewer, at their own desk, is not.
    assert token_call(Client(), reviewer.username, PASSWORD, ip="10.2.2.7").status_code == 200
    assert Client().post("/login/", {"username": reviewer.username, "password": PASSWORD}).status_code == 302


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


# --- the client address behind reverse proxies ------------------------------------


@override_settings(GLASSBOX_SIGNIN_MAX_FAILURES=3, GLASSBOX_TRUSTED_PROXIES=1)
def test_behind_a_trusted_proxy_each_client_has_its_own_budget(engineer, reviewer):
    client = Client()
    # Every request arrives from the proxy (10.9.0.1), which appends the client's address.
    for _ in range(3):
        token_call(client, engineer.username, "wrong", ip="10.9.0.1", forwarded_for="203.0.113.5")
    assert (
        token_call(client, engineer.username, PASSWORD, ip="10.9.0.1", forwarded_for="203.0.113.5").status_code == 429
    )

    # Other clients behind the same proxy are not locked out, nor is the engineer elsewhere.
    assert (
        token_call(client, reviewer.username, PASSWORD, ip="10.9.0.1", forwarded_for="203.0.113.6").status_code == 200
    )
    assert (
        token_call(client, engineer.username, PASSWORD, ip="10.9.0.1", forwarded_for="203.0.113.7").status_code == 200
    )


@override_settings(GLASSBOX_SIGNIN_MAX_FAILURES=3, GLASSBOX_TRUSTED_PROXIES=1)
def test_behind_a_trusted_proxy_audit_events_record_the_client_address(engineer):
    client = Client()
    for _ in range(3):
        token_call(client, engineer.username, "wrong", ip="10.9.0.1", forwarded_for="198.51.100.1, 203.0.113.5")

    token_call(client, engineer.username, PASSWORD, ip="10.9.0.1", forwarded_for="198.51.100.1, 203.0.113.5")

    failed = AuditEvent.objects.filter(action="auth.login", detail__reason="invalid credentials")
    assert list(failed.values_list("ip", flat=True)) == ["203.0.113.5"] * 3
    assert list(refusals().values_list("ip", flat=True)) == ["203.0.113.5"]


@override_settings(GLASSBOX_SIGNIN_MAX_FAILURES=3, GLASSBOX_TRUSTED_PROXIES=1)
def test_spoofed_entries_left_of_the_trusted_proxy_do_not_escape_the_budget(engineer):
    client = Client()
    # The guesser writes a new X-Forwarded-For each time; the proxy appends the real address.
    for n in range(3):
        token_call(client, engineer.username, "wrong", ip="10.9.0.1", forwarded_for=f"192.0.2.{n}, 203.0.113.9")

    refused = token_call(client, engineer.username, PASSWORD, ip="10.9.0.1", forwarded_for="192.0.2.99, 203.0.113.9")

    assert refused.status_code == 429
    assert list(refusals().values_list("ip", flat=True)) == ["203.0.113.9"]


@override_settings(GLASSBOX_SIGNIN_MAX_FAILURES=3, GLASSBOX_TRUSTED_PROXIES=0)
def test_without_trusted_proxies_a_forwarded_header_is_ignored(engineer):
    client = Client()
    for n in range(3):
        token_call(client, engineer.username, "wrong", ip="10.9.1.1", forwarded_for=f"192.0.2.{n}")

    refused = token_call(client, engineer.username, PASSWORD, ip="10.9.1.1", forwarded_for="192.0.2.99")

    assert refused.status_code == 429
    assert set(AuditEvent.objects.filter(action="auth.login").values_list("ip", flat=True)) == {"10.9.1.1"}


@pytest.mark.parametrize(
    ("proxies", "remote_addr", "forwarded_for", "client"),
    [
        (0, "10.9.2.1", None, "10.9.2.1"),
        (0, "10.9.2.1", "203.0.113.1", "10.9.2.1"),  # nobody vouches for the header
        (1, "10.9.2.1", "203.0.113.1", "203.0.113.1"),
        (1, "10.9.2.1", "192.0.2.1, 203.0.113.1", "203.0.113.1"),  # the left entry is the client's own text
        (2, "10.9.2.1", "192.0.2.1, 203.0.113.1, 10.9.3.1", "203.0.113.1"),  # CDN edge, then load balancer
        (2, "10.9.2.1", "203.0.113.1", "10.9.2.1"),  # a chain that skipped a proxy: the peer
        (1, "10.9.2.1", None, "10.9.2.1"),
        (1, "10.9.2.1", "not-an-address", "10.9.2.1"),
        (1, "10.9.2.1", "2001:db8::7", "2001:db8::7"),
    ],
)
def test_the_client_address_is_the_one_the_outermost_trusted_proxy_saw(proxies, remote_addr, forwarded_for, client):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for is not None else {}
    request = RequestFactory().get("/", REMOTE_ADDR=remote_addr, **headers)

    with override_settings(GLASSBOX_TRUSTED_PROXIES=proxies):
        assert client_address(request) == client
