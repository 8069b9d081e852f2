"""Run under `scripts/test_services.py run` by test_embedded_services.py:
migrate the database it was given, then a real Celery worker executes a task
sent through the broker it was given. Prints one JSON line of what happened."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))
TASK = "rollouts.tasks.check_certifications"  # reads the migrated tables: proves both


def main() -> int:
    data_dir = Path(os.environ["GLASSBOX_DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO, check=True, stdout=subprocess.DEVNULL
    )

    worker_log = data_dir / "worker.log"
    with open(worker_log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "glassbox", "worker", "-Q", "glassbox", "--concurrency=1",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"embedded-{os.getpid()}@%h",
             "--loglevel=INFO"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")
        import django

        django.setup()
        from django.db import connection

        from glassbox.celery import app

        task_id = app.send_task(TASK).id
        deadline = time.monotonic() + 60
        finished = ""
        while not finished and time.monotonic() < deadline:
            finished = next(
                (line for line in worker_log.read_text().splitlines() if task_id in line and "succeeded" in line), ""
            )
            time.sleep(0.2)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM django_migrations")
            migrations = cursor.fetchone()[0]
            cursor.execute("SELECT inet_server_port()")
            server_port = cursor.fetchone()[0]
        connection.close()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    print(json.dumps({
        "database_url": os.environ["DATABASE_URL"], "broker_url": os.environ["CELERY_BROKER_URL"],
        "server_port": server_port, "migrations": migrations, "task_id": task_id, "finished": finished,
        "services": os.environ.get("GLASSBOX_SERVICES"),
    }))  # fmt: skip
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
