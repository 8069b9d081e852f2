"""Running the `glassbox` command as a user does: a separate process, its own
config file, nothing of the test's environment that would log it in."""

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings

CLIENT_DIR = Path(settings.BASE_DIR) / "client"
# The client's own variables: never inherited from the shell that runs the tests.
CLIENT_VARIABLES = ("GLASSBOX_URL", "GLASSBOX_TOKEN", "GLASSBOX_CONFIG", "GLASSBOX_TIMEOUT")


def glassbox(*args: str, config: Path, stdin: str | None = None, env: dict | None = None, timeout: float = 300):
    """`glassbox ARGS...` from the source tree (python -m glassbox_client.cli), so
    the tests need no install; tests/client/test_console_script.py checks the installed command."""
    environment = {key: value for key, value in os.environ.items() if key not in CLIENT_VARIABLES}
    environment.update(PYTHONPATH=str(CLIENT_DIR), GLASSBOX_CONFIG=str(config), PYTHONIOENCODING="utf-8", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "glassbox_client.cli", *args],
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


class FakeServer:
    """A stand-in for what may sit at the configured URL: a proxy answering
    HTML, a slow server, or a canned API answer. `routes[(method, path)]` is
    (status, content type, body) or a function(request) returning that;
    `requests` records what came in (method, path, headers, body)."""

    def __init__(self):
        self.routes: dict = {}
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                fake.requests.append(request)
                route = fake.routes.get((self.command, self.path.split("?")[0]))
                if route is None:
                    route = (404, "text/html", b"<html><title>404 Not Found</title></html>")
                if callable(route):
                    route = route(request)
                status, content_type, payload = route
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fake_server():
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def fake(fake_server):
    fake_server.routes.clear()
    fake_server.requests.clear()
    return fake_server
