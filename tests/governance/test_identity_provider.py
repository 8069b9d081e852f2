"""Signing in through the company's identity provider: a real OpenID
Connect provider process on loopback (tests/identity_provider.py, started
once per session), the authorization code flow with PKCE end to end, and
Glassbox's side of it - accounts created on first sign-in and linked by
subject, roles from the provider's groups, deactivated accounts refused,
local passwords switched off."""

import os
import subprocess
import sys
from urllib.parse import unquote_plus, urlparse

import pytest
import requests
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from governance import identity
from governance.models import AuditEvent, OidcIdentity
from governance.roles import roles_of
from tests.conftest import IDP_PASSWORD, UserFactory


def sign_in(client: Client, provider, username: str, password: str = IDP_PASSWORD, next_url: str = "/models/"):
    """The browser's round trip: Glassbox -> provider's form -> Glassbox's callback."""
    start = client.get(f"/oidc/authenticate/?next={next_url}")
    assert start.status_code == 302, start
    authorize = urlparse(start["Location"])
    assert f"{authorize.scheme}://{authorize.netloc}" == provider.url
    form = requests.get(start["Location"], timeout=10)
    assert form.status_code == 200 and "Test identity provider" in form.text
    params = dict(pair.split("=", 1) for pair in authorize.query.split("&"))
    params = {key: unquote_plus(value) for key, value in params.items()}
    answer = requests.post(
        f"{provider.url}/authorize",
        data={**params, "username": username, "password": password},
        allow_redirects=False,
        timeout=10,
    )
    if answer.status_code != 302:
        return answer
    callback = urlparse(answer.headers["Location"])
    assert callback.path == "/oidc/callback/"
    return client.get(f"{callback.path}?{callback.query}")


def test_first_sign_in_creates_the_account_with_the_roles_of_its_groups(db, oidc):
    oidc.set_people({"alice": {"sub": "a-1", "groups": ["ml-engineers", "unrelated"], "email": "alice@corp.test"}})
    client = Client()

    response = sign_in(client, oidc, "alice")

    assert response.status_code == 302 and response["Location"] == "/models/"
    alice = User.objects.get(username="alice")
    assert (alice.email, alice.has_usable_password(), roles_of(alice)) == ("alice@corp.test", False, {"engineer"})
    assert OidcIdentity.objects.get(user=alice).subject == "a-1"
    assert client.get("/models/").status_code == 200
    actions = set(AuditEvent.objects.filter(actor_username="alice").values_list("action", flat=True))
    assert {"auth.oidc_account_create", "auth.oidc_roles_sync", "auth.login"} <= actions


def test_roles_follow_the_groups_at_every_sign_in(db, oidc):
    oidc.set_people({"bob": {"sub": "b-1", "groups": ["ml-engineers"]}})
    sign_in(Client(), oidc, "bob")
    oidc.set_people({"bob": {"sub": "b-1", "groups": ["model-risk"]}})

    assert sign_in(Client(), oidc, "bob").status_code == 302

    bob = User.objects.get(username="bob")
    assert roles_of(bob) == {"reviewer"}
    assert User.objects.filter(username__startswith="bob").count() == 1
    last = AuditEvent.objects.filter(action="auth.oidc_roles_sync", object_label="bob").latest("id")
    assert (last.detail["added"], last.detail["removed"]) == (["reviewer"], ["engineer"])


def test_a_deactivated_account_is_refused_at_sign_in_and_its_session_ends_at_once(db, oidc):
    oidc.set_people({"carol": {"sub": "c-1", "groups": ["ml-engineers"]}})
    client = Client()
    sign_in(client, oidc, "carol")
    assert client.get("/models/").status_code == 200

    User.objects.filter(username="carol").update(is_active=False)

    assert client.get("/models/").status_code == 302  # the open session is gone
    refused = sign_in(Client(), oidc, "carol")
    assert refused.status_code == 302 and refused["Location"] == "/login/?oidc=failed"
    denial = AuditEvent.objects.filter(action="auth.oidc_login", outcome="denied").get()
    assert denial.detail["reason"] == "account deactivated"
    page = Client().get(refused["Location"])
    assert b"did not succeed" in page.content


def test_a_local_account_with_the_same_username_is_never_taken_over(db, oidc):
    UserFactory(username="dave", role="manager")
    oidc.set_people({"dave": {"sub": "someone-else", "groups": ["ml-engineers"]}})

    refused = sign_in(Client(), oidc, "dave")

    assert refused["Location"] == "/login/?oidc=failed"
    assert not OidcIdentity.objects.exists()
    assert AuditEvent.objects.filter(action="auth.oidc_login", outcome="denied", object_label="dave").exists()


def test_a_wrong_password_at_the_provider_signs_nobody_in(db, oidc):
    oidc.set_people({"erin": {"sub": "e-1"}})

    answer = sign_in(Client(), oidc, "erin", password="guess")

    assert answer.status_code == 401 and not User.objects.filter(username="erin").exists()


def test_an_id_token_of_another_issuer_is_refused(db, oidc, settings):
    settings.GLASSBOX_OIDC_ISSUER = "https://elsewhere.example"
    oidc.set_people({"fay": {"sub": "f-1"}})
    client = Client(raise_request_exception=False)

    response = sign_in(client, oidc, "fay")

    assert response.status_code == 400
    assert not User.objects.filter(username="fay").exists()


def test_with_local_sign_in_off_passwords_open_nothing(db, oidc, settings, engineer):
    settings.GLASSBOX_LOCAL_SIGNIN = False
    engineer.set_password("correct horse battery staple")
    engineer.save()

    page = Client().get("/login/")
    posted = Client().post("/login/", {"username": engineer.username, "password": "correct horse battery staple"})
    token = Client().post(
        "/api/v1/auth/token/",
        {"username": engineer.username, "password": "correct horse battery staple"},
        content_type="application/json",
    )

    assert b"Sign in with Test IdP" in page.content and b'name="password"' not in page.content
    assert posted.status_code == 403 and "_auth_user_id" not in posted.wsgi_request.session
    assert token.status_code == 403 and token.json()["code"] == "local_signin_disabled"
    # The provider still signs people in.
    oidc.set_people({"gus": {"sub": "g-1", "groups": ["risk-heads"]}})
    assert sign_in(Client(), oidc, "gus").status_code == 302
    assert roles_of(User.objects.get(username="gus")) == {"manager"}


def test_the_provider_routes_are_absent_while_none_is_configured(db):
    assert Client().get("/oidc/authenticate/").status_code == 404
    assert Client().get("/oidc/callback/?code=x&state=y").status_code == 404
    assert b"Sign in with" not in Client().get("/login/").content


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({"platform": {"team": "nlp", "role": "maintainer"}}, [{"team": "nlp", "role": "maintainer"}]),
        ({"platform": {"team": "nlp", "role": "owner"}}, []),  # not a team role: ignored
        ({"platform": "nlp"}, []),
    ],
)
def test_group_to_team_mapping_is_read(settings, mapping, expected):
    settings.GLASSBOX_OIDC_GROUP_TEAMS = mapping

    assert identity.team_memberships_for_groups(["platform", "other"]) == expected


def _settings_in_a_child(env: dict) -> subprocess.CompletedProcess:
    # Settings are read once per process: a child reads them from this environment.
    script = (
        "import django; django.setup(); from django.conf import settings as s;"
        "print(s.GLASSBOX_OIDC_ENABLED, s.GLASSBOX_LOCAL_SIGNIN, s.GLASSBOX_OIDC_GROUP_ROLES)"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "glassbox.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_provider_settings_come_from_the_environment_and_refuse_half_a_configuration():
    endpoints = {
        f"GLASSBOX_OIDC_{name}_ENDPOINT": f"https://idp.example/{name.lower()}"
        for name in ("AUTHORIZATION", "TOKEN", "USERINFO", "JWKS")
    }
    full = {
        "GLASSBOX_OIDC_CLIENT_ID": "glassbox",
        "GLASSBOX_OIDC_CLIENT_SECRET": "s3cret",
        "GLASSBOX_OIDC_ISSUER": "https://idp.example",
        "GLASSBOX_OIDC_GROUP_ROLES": '{"ml": "engineer"}',
        "GLASSBOX_LOCAL_SIGNIN": "off",
        **endpoints,
    }

    configured = _settings_in_a_child(full)
    half = _settings_in_a_child({**full, "GLASSBOX_OIDC_TOKEN_ENDPOINT": ""})
    passwords_only = _settings_in_a_child({"GLASSBOX_LOCAL_SIGNIN": "off"})

    assert configured.stdout.strip() == "True False {'ml': 'engineer'}", configured.stderr
    assert half.returncode != 0 and "GLASSBOX_OIDC_TOKEN_ENDPOINT" in half.stderr
    # Without a provider, local sign-in cannot be switched off (nobody could sign in).
    assert passwords_only.stdout.strip() == "False True {}", passwords_only.stderr


def test_team_memberships_follow_the_groups_at_every_sign_in(db, oidc, settings):
    from governance.models import Team, TeamMembership

    settings.GLASSBOX_OIDC_GROUP_TEAMS = {
        "fraud-devs": {"team": "fraud", "role": "engineer"},
        "fraud-leads": {"team": "fraud", "role": "maintainer"},
        "nlp-readers": {"team": "nlp", "role": "viewer"},
    }
    for name in ("fraud", "nlp", "local-only"):
        Team.objects.create(name=name)
    oidc.set_people({"hana": {"sub": "h-1", "groups": ["ml-engineers", "fraud-devs", "fraud-leads", "nlp-readers"]}})
    sign_in(Client(), oidc, "hana")
    hana = User.objects.get(username="hana")
    # A team the provider does not manage keeps what Glassbox says.
    TeamMembership.objects.create(team=Team.objects.get(name="local-only"), user=hana, role="viewer")

    def memberships():
        return dict(TeamMembership.objects.filter(user=hana).values_list("team__name", "role"))

    assert memberships() == {"fraud": "maintainer", "nlp": "viewer", "local-only": "viewer"}  # the higher role wins
    oidc.set_people({"hana": {"sub": "h-1", "groups": ["ml-engineers", "fraud-devs"]}})

    assert sign_in(Client(), oidc, "hana").status_code == 302

    assert memberships() == {"fraud": "engineer", "local-only": "viewer"}
    events = AuditEvent.objects.filter(object_type="governance.team", actor_username="hana").order_by("id")
    assert [event.action for event in events] == [
        "team.member_add",
        "team.member_add",
        "team.member_role",
        "team.member_remove",
    ]
    assert all(event.detail["source"] == "identity provider groups" for event in events)
