"""Who people are, in a real browser: a person of the company's identity
provider signs in through it (the test provider process, its own sign-in
form) with passwords switched off here, and a local account changes its
password from the page header."""

import re

import pytest
from django.db import connections
from playwright.sync_api import expect

from tests.browser.conftest import SCREENSHOTS
from tests.conftest import IDP_PASSWORD

pytestmark = [pytest.mark.browser]

PASSWORD = "correct horse battery staple"  # every persona's (tests/conftest.py)


@pytest.mark.usefixtures("committed_db")
def test_a_person_signs_in_through_the_identity_provider(live_server, browser, oidc, settings):
    settings.GLASSBOX_LOCAL_SIGNIN = False
    oidc.set_people({"hana": {"sub": "h-1", "groups": ["ml-engineers"], "email": "hana@corp.test"}})
    try:
        context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto("/models/")
        expect(page).to_have_url(re.compile(r"/login/"))
        expect(page.locator("input[name=password]")).to_have_count(0)  # passwords are off

        page.click("#oidc-signin")
        expect(page.locator("h1")).to_have_text("Test identity provider")
        assert page.url.startswith(oidc.url)
        page.fill("#idp-username", "hana")
        page.fill("#idp-password", IDP_PASSWORD)
        page.click("#idp-submit")

        page.wait_for_url(re.compile(r"/models/$"))
        expect(page.locator(".who")).to_contain_text("hana · engineer")
        expect(page.locator(".who a", has_text="Change password")).to_have_count(0)
        page.screenshot(path=SCREENSHOTS / "identity-provider-signed-in.png", full_page=True)
        page.locator(".who button", has_text="Log out").click()
        page.wait_for_url(re.compile(r"/login/"))
        context.close()
    finally:
        connections.close_all()


@pytest.mark.usefixtures("committed_db")
def test_a_local_account_changes_its_password_from_the_header(live_server, browser, engineer):
    try:
        context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto("/login/")
        page.fill("input[name=username]", engineer.username)
        page.fill("input[name=password]", PASSWORD)
        page.click("main form button[type=submit]")
        page.wait_for_url(re.compile(r"/models/$"))

        page.locator(".who a", has_text="Change password").click()
        page.fill("input[name=old_password]", PASSWORD)
        page.fill("input[name=new_password1]", "a different horse, battery staple 42")
        page.fill("input[name=new_password2]", "a different horse, battery staple 42")
        page.click("main form button[type=submit]")

        expect(page.locator("h1")).to_have_text("Password changed")
        page.goto("/models/")  # still signed in
        expect(page.locator(".who")).to_contain_text(engineer.username)
        page.screenshot(path=SCREENSHOTS / "password-changed.png", full_page=True)
        context.close()
        engineer.refresh_from_db()
        assert engineer.check_password("a different horse, battery staple 42")
    finally:
        connections.close_all()
