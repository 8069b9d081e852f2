"""A real browser for the journeys: Debian's Chromium, headless, driven by
Playwright. The browser comes from the system (`.ci/run` installs it with
apt-get); Playwright never downloads one."""

import os
from pathlib import Path

import pytest
from django.conf import settings

CHROMIUM = "/usr/bin/chromium"
# End states of every journey land here (CI keeps the folder as an artifact; README names it).
SCREENSHOTS = Path(settings.BASE_DIR) / "screenshots"


@pytest.fixture
def browser(monkeypatch):
    """A headless Chromium for one test. Playwright's sync API runs an asyncio
    loop in this thread, and Django refuses ORM calls from a thread with a
    running loop; the test's own ORM calls are plain synchronous code, so
    that guard is lifted for this test only."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium fonts-noto-cjk (.ci/run does)")
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()
