"""The production topology on one host, or the part of it this host runs (`make prod`).

    DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://... \\
    DJANGO_SECRET_KEY=... DJANGO_ALLOWED_HOSTS=glassbox.example.com \\
    python scripts/prod.py

Checks the environment (refusing with the list of what is missing), runs
`check --deploy`, `migrate` and `collectstatic` with GLASSBOX_ENV=production,
then starts and watches:

  web               gunicorn (glassbox/gunicorn.conf.py: GLASSBOX_BIND, GLASSBOX_WEB_WORKERS x GLASSBOX_WEB_THREADS),
                    static files served by whitenoise
  light             a Celery worker on the default `glassbox` queue (rollout analysis, monitoring, notifications)
  explanations      a Celery worker on the `explanations` queue (reports, deep verification)
  explanations-gpu  a Celery worker on `explanations-gpu` (only where GLASSBOX_GPU_METHODS is set)
  beat              Celery beat: ONE per deployment

GLASSBOX_PROCESSES (comma-separated names above) picks what this host runs, e.g.
`web` on one host, `explanations` on another, `light,beat` on a third; the
default is all of them. Ctrl-C or SIGTERM stops every process (each gets
SIGTERM, then SIGKILL after GLASSBOX_STOP_TIMEOUT seconds) and exits 0; a
process that dies on its own stops the others and exits 1, for systemd or
the orchestrator to restart the whole set.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIRED = {
    "DATABASE_URL": "PostgreSQL, e.g. postgres://glassbox:secret@db.internal:5432/glassbox",
    "CELERY_BROKER_URL": "Redis, e.g. redis://redis.internal:6379/0",
    "DJANGO_SECRET_KEY": "a long random string, the same on every host",
    "DJANGO_ALLOWED_HOSTS": "the host names people open, comma-separated",
}
S3_REQUIRED = {
    "ARTIFACT_S3_BUCKET": "the bucket that holds artifacts and datasets",
    "AWS_ACCESS_KEY_ID": "the key of an account that may read and write the bucket",
    "AWS_SECRET_ACCESS_KEY": "its secret",
}
ALL_PROCESSES = ("web", "light", "explanations", "explanations-gpu", "beat")


def say(message: str) -> None:
    print(f"prod: {message}", flush=True)


def configuration_problems(env: dict[str, str]) -> list[str]:
    """Everything wrong with the environment at once (an operator fixes it in one go)."""
    required = dict(REQUIRED)
    storage = env.get("ARTIFACT_STORAGE", "local")
    if storage == "s3":
        required.update(S3_REQUIRED)
    problems = [f"{name} is not set ({hint})" for name, hint in required.items() if not env.get(name, "").strip()]
    if storage not in ("local", "s3"):
        problems.append(f"ARTIFACT_STORAGE must be local or s3, not {storage!r}")
    database = env.get("DATABASE_URL", "")
    if database and not database.startswith(("postgres://", "postgresql://", "pgsql://")):
        problems.append("DATABASE_URL must point at PostgreSQL (SQLite is for the single-process demo)")
    broker = env.get("CELERY_BROKER_URL", "")
    if broker and not broker.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
        problems.append("CELERY_BROKER_URL must be Redis (or RabbitMQ): workers on other hosts share it")
    unknown = set(processes_wanted(env)) - set(ALL_PROCESSES)
    if unknown:
        problems.append(f"GLASSBOX_PROCESSES names unknown processes: {', '.join(sorted(unknown))}")
    return problems


def processes_wanted(env: dict[str, str]) -> list[str]:
    named = env.get("GLASSBOX_PROCESSES", "").strip()
    if named:
        return [name.strip() for name in named.split(",") if name.strip()]
    wanted = ["web", "light", "explanations", "beat"]
    if env.get("GLASSBOX_GPU_METHODS", "").strip():
        wanted.insert(3, "explanations-gpu")
    return wanted


def commands(env: dict[str, str], data_dir: Path) -> dict[str, list[str]]:
    python = sys.executable

    def worker(queue: str, name: str, concurrency_variable: str, default: int) -> list[str]:
        return [
            python, "-m", "celery", "-A", "glassbox", "worker", "-Q", queue, "-n", f"{name}@%h",
            f"--concurrency={int(env.get(concurrency_variable, default))}", "--without-gossip", "--without-mingle",
            f"--loglevel={env.get('GLASSBOX_LOG_LEVEL', 'INFO')}",
        ]  # fmt: skip

    return {
        # The control socket in our data folder: ~/.gunicorn/gunicorn.ctl is shared by every gunicorn of the account.
        "web": [
            python, "-m", "gunicorn", "-c", str(REPO / "glassbox" / "gunicorn.conf.py"),
            "--control-socket", str(data_dir / "gunicorn.ctl"), "glassbox.wsgi",
        ],
        "light": worker("glassbox", "light", "GLASSBOX_LIGHT_WORKER_CONCURRENCY", 2),
        "explanations": worker("explanations", "explain", "GLASSBOX_EXPLANATION_WORKER_CONCURRENCY", 1),
        "explanations-gpu": worker("explanations-gpu", "explain-gpu", "GLASSBOX_GPU_WORKER_CONCURRENCY", 1),
        "beat": [
            python, "-m", "celery", "-A", "glassbox", "beat", "-s", str(data_dir / "celerybeat-schedule"),
            f"--loglevel={env.get('GLASSBOX_LOG_LEVEL', 'INFO')}",
        ],
    }  # fmt: skip


def prepare(env: dict[str, str], steps: list[tuple[str, ...]]) -> int:
    """`manage.py` commands in one process (one Django start-up, not one per step)."""
    script = (
        "import sys, django; from django.core.management import call_command; django.setup()\n"
        f"for step in {steps!r}:\n"
        "    print('prod: manage.py ' + ' '.join(step), flush=True)\n"
        "    call_command(*step)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env={**env, "DJANGO_SETTINGS_MODULE": "glassbox.settings"}
    )
    return result.returncode


def relay(name: str, stream) -> None:
    """Each process's output, line by line, named (one terminal or journal for all)."""
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(f"[{name}] ".encode() + line)
        sys.stdout.buffer.flush()


class Supervisor:
    def __init__(self, env: dict[str, str], stop_timeout: float):
        self.env = env
        self.stop_timeout = stop_timeout
        self.running: dict[str, subprocess.Popen] = {}
        self.stop_requested = threading.Event()

    def request_stop(self, signum, _frame) -> None:
        say(f"{signal.Signals(signum).name} received: stopping")
        self.stop_requested.set()

    def start(self, name: str, command: list[str]) -> None:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C reaches us only, and we stop each
            # process (gunicorn's and Celery's children included) in order.
            start_new_session=True,
        )
        self.running[name] = process
        threading.Thread(target=relay, args=(name, process.stdout), daemon=True).start()
        say(f"started {name} (pid {process.pid})")

    def watch(self) -> int:
        while not self.stop_requested.wait(0.5):
            for name, process in self.running.items():
                if process.poll() is not None:
                    say(f"{name} exited on its own (status {process.returncode}): stopping the others")
                    self.stop()
                    return 1
        self.stop()
        return 0

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                # gunicorn: graceful (finishes requests in flight); Celery: warm
                # shutdown (finishes its task; an interrupted one is redelivered, acks are late).
                self._signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name, process in self.running.items():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{name} still running after {self.stop_timeout:.0f} s: killing it")
                self._signal_group(process, signal.SIGKILL)
                process.wait()
            # Whatever of its group outlived it (a pool child) goes too.
            self._signal_group(process, signal.SIGKILL)
            say(f"{name} stopped")

    @staticmethod
    def _signal_group(process: subprocess.Popen, signum: int) -> None:
        try:
            os.killpg(process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def main() -> int:
    env = {**os.environ, "GLASSBOX_ENV": "production", "PYTHONUNBUFFERED": "1"}
    problems = configuration_problems(env)
    if problems:
        print("prod: refusing to start, the production settings are incomplete:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    wanted = processes_wanted(env)
    data_dir = Path(env.get("GLASSBOX_DATA_DIR", REPO / "var")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    supervisor = Supervisor(env, stop_timeout=float(env.get("GLASSBOX_STOP_TIMEOUT", "30")))
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)

    # check --deploy fails on errors (its warnings are printed); the schema and
    # the static files belong with the web server. With several web hosts, let
    # one migrate (GLASSBOX_MIGRATE=0 on the others).
    steps = [("check", "--deploy")]
    if "web" in wanted:
        if env.get("GLASSBOX_MIGRATE", "1") != "0":
            steps.append(("migrate", "--noinput"))
        steps.append(("collectstatic", "--noinput", "--verbosity=0"))
    prepared = prepare(env, steps)
    if supervisor.stop_requested.is_set():
        say("stopped before starting")  # Ctrl-C during the preparation: nothing was started
        return 0
    if prepared != 0:
        say(f"preparing failed (exit {prepared}): not starting")
        return 1
    all_commands = commands(env, data_dir)
    for name in wanted:
        supervisor.start(name, all_commands[name])
    say(
        f"running: {', '.join(wanted)}"
        + (f" (web on http://{env.get('GLASSBOX_BIND', '127.0.0.1:8000')})" if "web" in wanted else "")
    )
    status = supervisor.watch()
    say("stopped" if status == 0 else "stopped after a failure")
    return status


if __name__ == "__main__":
    sys.exit(main())
