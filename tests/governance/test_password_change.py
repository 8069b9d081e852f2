"""Local accounts change their own password on Django's pages: CSRF, the
sign-in budget on the current password, audit events, a link in the header;
accounts of the identity provider have no password here to change."""

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.test import Client

from governance.models import AuditEvent
from tests.conftest import page_client_for

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different horse, battery staple 42"


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


def change(client, old=PASSWORD, new=NEW_PASSWORD):
    return client.post(
        "/password/change/", {"old_password": old, "new_password1": new, "new_password2": new}, REMOTE_ADDR="10.2.2.2"
    )


def test_a_local_account_changes_its_password_and_keeps_its_session(engineer):
    client = page_client_for(engineer)
    assert b'href="/password/change/"' in client.get("/models/").content

    response = change(client)

    assert response.status_code == 302 and response["Location"] == "/password/change/done/"
    engineer.refresh_from_db()
    assert engineer.check_password(NEW_PASSWORD)
    assert client.get("/models/").status_code == 200  # this session stays signed in
    event = AuditEvent.objects.filter(action="auth.password_change", outcome="ok").get()
    assert (event.actor_username, event.object_label) == (engineer.username, engineer.username)
    assert Client().login(username=engineer.username, password=NEW_PASSWORD)


def test_the_change_form_needs_its_csrf_token(engineer):
    client = page_client_for(engineer, enforce_csrf=True)
    page = client.get("/password/change/")
    assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content

    assert change(client).status_code == 403
    engineer.refresh_from_db()
    assert engineer.check_password(PASSWORD)


def test_guessing_the_current_password_spends_the_sign_in_budget(engineer, settings):
    settings.GLASSBOX_SIGNIN_MAX_FAILURES = 2
    client = page_client_for(engineer)
    for _ in range(2):
        wrong = change(client, old="guess")
        assert wrong.status_code == 200 and b"incorrectly" in wrong.content

    refused = change(client)

    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    engineer.refresh_from_db()
    assert engineer.check_password(PASSWORD)
    denials = AuditEvent.objects.filter(outcome="denied")
    assert denials.filter(action="auth.password_change", detail__reason="wrong current password").count() == 2
    assert denials.filter(action="auth.login", detail__reason="too many failed sign-ins").exists()


def test_an_account_without_a_local_password_has_no_change_page(db):
    sso = User.objects.create_user("sso-person")  # no password: signs in through the provider
    sso.groups.add(Group.objects.get(name="engineer"))
    client = page_client_for(sso)

    assert client.get("/password/change/").status_code == 404
    assert b'href="/password/change/"' not in client.get("/models/").content


def test_signed_out_visitors_are_sent_to_sign_in(db):
    response = Client().get("/password/change/")

    assert response.status_code == 302 and response["Location"].startswith("/login/")
