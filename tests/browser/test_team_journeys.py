"""Teams in a real browser (headless Chromium against a live server): a
second team cannot see the first team's model, and a viewer of the first
team sees it without the buttons that would change it."""

import re

import pytest
from django.db import connections
from playwright.sync_api import expect

from tests.browser.conftest import SCREENSHOTS
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, UserFactory, team_named

pytestmark = [pytest.mark.browser]
PASSWORD = "correct horse battery staple"  # every persona's (tests/conftest.py)


def signed_in(browser, base_url: str, username: str):
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/models/$"))
    return page


@pytest.mark.usefixtures("committed_db")
def test_a_second_team_cannot_see_the_first_teams_model(live_server, browser, engineer):
    try:
        model = RegisteredModelFactory(name="zh-sentiment", created_by=engineer)  # team `default`
        ModelVersionFactory(model=model, created_by=engineer)
        UserFactory(username="otto", role="engineer", team=("payments", "engineer"))
        RegisteredModelFactory(name="card-fraud", created_by=engineer, team=team_named("payments"))
        UserFactory(username="vic", team=("default", "viewer"))

        # The owning team's maintainer sees the model and the button to upload.
        page = signed_in(browser, live_server.url, "erin")
        expect(page.locator("table.grid")).to_contain_text("zh-sentiment")
        page.click("text=zh-sentiment")
        expect(page.locator(".team")).to_have_text("default")
        expect(page.get_by_role("link", name="Upload a version")).to_be_visible()

        # The second team's engineer: the model is not in the list, and its page
        # answers as if it did not exist.
        page = signed_in(browser, live_server.url, "otto")
        listing = page.locator("table.grid")
        expect(listing).to_contain_text("card-fraud")
        expect(listing).not_to_contain_text("zh-sentiment")
        response = page.goto("/models/zh-sentiment/")
        assert response.status == 404
        assert page.goto("/models/zh-sentiment/versions/1/").status == 404
        assert page.goto("/models/zh-sentiment/upload/").status == 404
        page.screenshot(path=SCREENSHOTS / "teams-other-team-404.png", full_page=True)

        # A viewer of the owning team reads it; the upload button is hidden and
        # the upload page itself refuses.
        page = signed_in(browser, live_server.url, "vic")
        expect(page.locator("table.grid")).to_contain_text("zh-sentiment")
        expect(page.locator("table.grid")).not_to_contain_text("card-fraud")
        page.goto("/models/zh-sentiment/")
        expect(page.locator("h1")).to_contain_text("zh-sentiment")
        expect(page.get_by_role("link", name="Upload a version")).to_have_count(0)
        page.goto("/models/zh-sentiment/versions/1/")
        expect(page.get_by_role("button", name="Submit for review")).to_have_count(0)
        assert page.goto("/models/zh-sentiment/upload/").status == 403
    finally:
        connections.close_all()
