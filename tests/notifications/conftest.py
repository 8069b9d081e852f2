"""A real SMTP server (aiosmtpd, on loopback, in a thread of its own) and a
real HTTP receiver for webhooks (http.server, in a thread), both reached
over TCP by the code under test - in this process or a Celery worker's."""

import email
import email.policy
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Inbox:
    """An aiosmtpd handler keeping every message it accepts; `refuse` makes
    it answer 451 (a temporary failure) to the next that many messages."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.refuse = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        with self.lock:
            if self.refuse > 0:
                self.refuse -= 1
                return "451 Try again later"
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list:
        return [m for m in self.messages if address in m["X-Envelope-To"]]


@dataclass
class SmtpServer:
    host: str
    port: int
    inbox: _Inbox

    @property
    def messages(self):
        return self.inbox.messages

    def env(self) -> dict[str, str]:
        return {"EMAIL_HOST": self.host, "EMAIL_PORT": str(self.port)}


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server on 127.0.0.1, and the settings pointing Django's SMTP backend at it."""
    inbox = _Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = False
    try:
        yield SmtpServer("127.0.0.1", port, inbox)
    finally:
        controller.stop()


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """What the receiver answers is scripted: `answers` is a list of
    (status, extra) consumed one per request, the last one repeating.
    extra may hold "sleep" (seconds before answering), "body" (bytes),
    "location" (a redirect target)."""

    url: str
    requests: list = field(default_factory=list)
    answers: list = field(default_factory=lambda: [(204, {})])


def _handler(receiver: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receiver.requests.append(Received(self.path, dict(self.headers), body))
            status, extra = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
            if extra.get("sleep"):
                time.sleep(extra["sleep"])
            data = extra.get("body", b"")
            try:
                self.send_response(status)
                if "location" in extra:
                    self.send_header("Location", extra["location"])
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the caller gave up (a timeout or the size cap): that is the point of some tests

        do_GET = do_POST  # noqa: N815 (a followed redirect would arrive as GET)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def receiver(settings):
    """A real HTTP server on 127.0.0.1 in a thread; private targets allowed so webhooks may reach it."""
    settings.GLASSBOX_WEBHOOK_ALLOW_PRIVATE = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)
    state = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks/glassbox")
    server.RequestHandlerClass = _handler(state)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
