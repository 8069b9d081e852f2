import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import connection


@pytest.fixture
def worker_pool(committed_db, tmp_path):
    """Start real Celery workers on demand, each in its own process group so
    that a test can SIGKILL one whole worker (parent and pool children) the
    way a machine dies. `start(name, beat=False, env={})` returns the process;
    `log(name)` its output; `kill(name)` kills it without warning."""
    from glassbox.celery import app

    app.control.purge()
    db = connection.settings_dict
    base_env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "GLASSBOX_DATA_DIR": str(settings.DATA_DIR),
        "PYTHONUNBUFFERED": "1",
    }
    processes: dict[str, subprocess.Popen] = {}

    def log(name: str) -> str:
        path = tmp_path / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(name: str, *, beat: bool = False, env: dict | None = None) -> subprocess.Popen:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "glassbox",
            "worker",
            "--loglevel=INFO",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{name}-{os.getpid()}@%h",
        ]
        if beat:
            command += ["-B", "-s", str(tmp_path / f"{name}-beat-schedule")]
        with open(tmp_path / f"{name}.log", "wb") as out:
            process = subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                env={**base_env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes[name] = process
        deadline = time.monotonic() + 60
        while "ready." not in log(name):
            if process.poll() is not None or time.monotonic() > deadline:
                kill(name)
                pytest.fail(f"worker {name} did not start:\n{log(name)[-3000:]}")
            time.sleep(0.2)
        return process

    def kill(name: str) -> None:
        process = processes[name]
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=20)

    class Pool:
        pass

    pool = Pool()
    pool.start, pool.log, pool.kill = start, log, kill
    yield pool
    for name, process in processes.items():
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                kill(name)
