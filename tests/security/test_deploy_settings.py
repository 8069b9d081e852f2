"""Production settings pass Django's deployment checklist and send the
security headers. Both run in a child process: settings are read once per
process, and the test process runs with development settings."""

import json
import os
import secrets
import subprocess
import sys

from django.conf import settings

PRODUCTION_ENV = {
    "GLASSBOX_ENV": "production",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
    "DJANGO_ALLOWED_HOSTS": "glassbox.example.org,testserver",
}


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=settings.BASE_DIR,
        env={**os.environ, **PRODUCTION_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"])

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_responses_carry_the_security_headers():
    script = (
        "import django, json; django.setup()\n"
        "from django.test import Client\n"
        "plain = Client().get('/login/')\n"
        "secure = Client().get('/login/', secure=True)\n"
        "print(json.dumps({'plain_status': plain.status_code, 'plain_location': plain.get('Location', ''),\n"
        "                  'status': secure.status_code, 'headers': dict(secure.headers),\n"
        "                  'cookies': {k: dict(v) for k, v in secure.cookies.items()}}))\n"
    )
    result = _run(["-c", f"import os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'glassbox.settings')\n{script}"])
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["plain_status"] == 301 and seen["plain_location"].startswith("https://")  # HTTPS only
    headers = seen["headers"]
    assert seen["status"] == 200
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert seen["cookies"]["csrftoken"]["secure"] is True
