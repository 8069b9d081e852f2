"""`make prod`'s topology started for real (scripts/prod.py): gunicorn, a
Celery worker per queue and beat, with production settings, on this
machine's PostgreSQL (a database of its own), Redis (a db number of its own)
and local artifact storage. The API part of the browser journeys runs
through it, then SIGTERM must stop every process it started."""

import csv
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psutil
import psycopg
import pytest
import redis
import requests
from django.conf import settings
from django.db import connection

from tests.conftest import wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.worker]

REPO = settings.BASE_DIR
PASSWORD = "correct horse battery staple"
MODEL = "zh-review-tfidf"
# The Redis db the topology's broker uses: its own, emptied before and after
# (make test's broker is db 15). GLASSBOX_TOPOLOGY_REDIS_DB moves it.
TOPOLOGY_REDIS_DB = int(os.environ.get("GLASSBOX_TOPOLOGY_REDIS_DB", "14"))
# What an operator does once after the first migrate (createsuperuser and
# teams, in short): the journey's people.
PERSONAS = f"""
from django.contrib.auth.models import Group, User
from governance import roles
from governance.models import Team, TeamMembership
team = Team.objects.create(name="nlp")
for name, role in (("erin", roles.ENGINEER), ("rita", roles.REVIEWER), ("ravi", roles.REVIEWER)):
    user = User.objects.create_user(name, email=name + "@example.test", password={PASSWORD!r})
    user.groups.add(Group.objects.get(name=role))
TeamMembership.objects.create(team=team, user=User.objects.get(username="erin"), role="maintainer")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def topology_database():
    """A database of the topology's own on this machine's PostgreSQL, dropped after."""
    server = connection.settings_dict
    name = f"{server['NAME']}_topology"
    admin = {"host": server["HOST"], "port": server["PORT"], "user": server["USER"], "dbname": "postgres"}
    with psycopg.connect(**admin, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres://{server['USER']}@{server['HOST']}:{server['PORT']}/{name}"
    with psycopg.connect(**admin, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def topology_broker():
    broker = urlsplit(settings.CELERY_BROKER_URL)
    client = redis.Redis(host=broker.hostname, port=broker.port or 6379, db=TOPOLOGY_REDIS_DB)
    client.flushdb()
    yield f"redis://{broker.hostname}:{broker.port or 6379}/{TOPOLOGY_REDIS_DB}"
    client.flushdb()


def production_env(*, database_url: str, broker_url: str, data_dir, port: int) -> dict[str, str]:
    """Only what an operator sets: nothing of the test run's own environment."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(data_dir),
        "LANG": "C.UTF-8",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "ARTIFACT_STORAGE": "local",
        "GLASSBOX_DATA_DIR": str(data_dir),
        "GLASSBOX_BIND": f"127.0.0.1:{port}",
        "GLASSBOX_WEB_THREADS": "8",
        "GLASSBOX_LIGHT_WORKER_CONCURRENCY": "1",
        # As in make test: no ONNX export at warm time (its own tests cover it).
        "GLASSBOX_INFERENCE_BACKEND": "torch",
    }


class Api:
    """HTTP to the topology's gunicorn as through the TLS proxy in front of it
    (X-Forwarded-Proto: https; production redirects plain HTTP)."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def call(self, method: str, path: str, *, token: str | None = None, expect=(200,), **kwargs):
        headers = {"X-Forwarded-Proto": "https", **kwargs.pop("headers", {})}
        if token:
            headers["Authorization"] = f"Token {token}"
        # One connection per call (no shared session): calls run from several threads.
        response = requests.request(method, self.base_url + path, headers=headers, timeout=120, **kwargs)
        assert response.status_code in expect, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response

    def token(self, username: str) -> str:
        data = {"username": username, "password": PASSWORD}
        return self.call("POST", "/api/v1/auth/token/", data=data).json()["token"]

    def upload(self, token: str, skops_path) -> dict:
        return self.call(
            "POST",
            f"/api/v1/models/{MODEL}/versions/",
            token=token,
            expect=(201,),
            files={"artifact": (skops_path.name, skops_path.read_bytes(), "application/octet-stream")},
            data={"flavor": "sklearn", "metrics": json.dumps({"accuracy": 0.81})},
        ).json()

    def approve(self, number: int, reviewers: list[str]) -> str:
        status = ""
        for token in reviewers:
            status = self.call(
                "POST",
                f"/api/v1/models/{MODEL}/versions/{number}/decisions/",
                token=token,
                expect=(201,),
                json={"decision": "approve", "comment": "reviewed through make prod"},
            ).json()["version_status"]
        return status

    def predict(self, token: str, texts: list[str]) -> list[dict]:
        response = self.call("POST", f"/api/v1/models/{MODEL}/predict/", token=token, json={"inputs": texts})
        return response.json()["predictions"]


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_make_prod_refuses_to_start_without_the_production_settings():
    bare = subprocess.run(
        [sys.executable, "scripts/prod.py"], cwd=REPO, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert bare.returncode == 2
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"):
        assert f"{name} is not set" in bare.stderr
    assert "ARTIFACT_S3_BUCKET" not in bare.stderr

    s3 = subprocess.run(
        [sys.executable, "scripts/prod.py"],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "ARTIFACT_STORAGE": "s3",
            "DATABASE_URL": "sqlite:///glassbox.sqlite3",
            "CELERY_BROKER_URL": "filesystem://",
            "DJANGO_SECRET_KEY": "x" * 50,
            "DJANGO_ALLOWED_HOSTS": "glassbox.example.com",
        },
        capture_output=True,
        text=True,
    )
    assert s3.returncode == 2
    for name in ("ARTIFACT_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert f"{name} is not set" in s3.stderr
    assert "DATABASE_URL must point at PostgreSQL" in s3.stderr
    assert "CELERY_BROKER_URL must be Redis" in s3.stderr
    assert "DJANGO_SECRET_KEY is not set" not in s3.stderr


def test_make_prod_serves_the_api_journeys_and_stops_on_sigterm(
    topology_database, topology_broker, demo_models, resaved_demo_skops, tmp_path
):
    port = free_port()
    data_dir = tmp_path / "prod-data"
    data_dir.mkdir()
    env = production_env(database_url=topology_database, broker_url=topology_broker, data_dir=data_dir, port=port)
    log_path = tmp_path / "prod.log"
    with open(log_path, "wb") as log:
        prod = subprocess.Popen(
            [sys.executable, "scripts/prod.py"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = Api(f"http://127.0.0.1:{port}")
    started: list[psutil.Process] = []
    began = time.monotonic()

    def phase(what: str) -> None:  # where the time goes, in the captured output
        print(f"{time.monotonic() - began:6.1f} s  {what}")

    try:

        def log_says(text: str) -> bool:
            assert prod.poll() is None, log_path.read_text(errors="replace")[-3000:]
            return text in log_path.read_text(errors="replace")

        def ready() -> bool:
            assert prod.poll() is None, log_path.read_text(errors="replace")[-3000:]
            try:
                return requests.get(f"{api.base_url}/readyz", timeout=5).status_code == 200
            except requests.RequestException:  # not listening yet, or its worker still booting
                return False

        # Migrated once the processes start: the journey's people are created while gunicorn boots.
        wait_for(lambda: log_says("prod: started web"), timeout=120, interval=0.5, what="make prod's migrate")
        personas = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", PERSONAS],
            cwd=REPO,
            env={**env, "GLASSBOX_ENV": "production"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_for(ready, timeout=120, interval=0.5, what="/readyz of make prod's gunicorn")
        phase("ready")
        output = log_path.read_text(errors="replace")
        assert "System check identified no issues" in output  # check --deploy, with the production settings
        for name in ("web", "light", "explanations", "beat"):
            assert f"started {name} (pid" in output
        # One gunicorn, one worker per queue, one beat.
        command_lines = [" ".join(child.cmdline()) for child in psutil.Process(prod.pid).children()]
        assert sum("gunicorn" in line for line in command_lines) == 1
        assert sum(" worker -Q glassbox " in line for line in command_lines) == 1
        assert sum(" worker -Q explanations " in line for line in command_lines) == 1
        assert sum(" beat " in line for line in command_lines) == 1

        # Plain HTTP is sent to HTTPS (the probes answered on it above); whitenoise serves the static files.
        plain = requests.get(f"{api.base_url}/login/", allow_redirects=False, timeout=30)
        assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
        assert 'href="/static/glassbox.css"' in api.call("GET", "/login/").text
        css = api.call("GET", "/static/glassbox.css", headers={"Accept-Encoding": "gzip"})
        assert css.headers["Content-Type"].startswith("text/css") and css.headers["Content-Encoding"] == "gzip"
        assert css.text == (REPO / "static" / "glassbox.css").read_text()

        assert personas.wait(timeout=120) == 0, personas.stdout.read()
        phase("personas created")
        with ThreadPoolExecutor(max_workers=3) as pool:  # three sign-ins at production's PBKDF2 cost
            erin, rita, ravi = pool.map(api.token, ("erin", "rita", "ravi"))

        # The quick demo's TF-IDF pipeline (the browser journeys take the BERT through the same API), twice.
        # Each process's first use of it costs its imports (skops walks every scikit-learn estimator),
        # so the two uploads' load checks run side by side, and gunicorn loads v1 while the
        # explanations worker computes the report on v2.
        model = {"name": MODEL, "task": "text-classification", "risk_tier": "medium", "description": "TF-IDF 情感分类"}
        api.call("POST", "/api/v1/models/", token=erin, expect=(201,), json=model)
        holdout = demo_models["holdout_csv"].read_bytes()
        with ThreadPoolExecutor(max_workers=3) as pool:
            uploads = [
                pool.submit(api.upload, erin, path) for path in (demo_models["sklearn_skops"], resaved_demo_skops)
            ]
            dataset = (
                pool.submit(
                    api.call,
                    "POST",
                    "/api/v1/datasets/",
                    token=erin,
                    expect=(201,),
                    files={"file": ("holdout.csv", holdout, "text/csv")},
                    data={"name": "holdout"},
                )
                .result()
                .json()
            )
            assert sorted(upload.result()["version"] for upload in uploads) == [1, 2]
        assert dataset["row_count"] == len(list(csv.DictReader(io.StringIO(holdout.decode("utf-8")))))
        phase("versions and dataset uploaded")

        # v2's evidence: a SHAP report over a sample of the held-out set, run by the explanations worker.
        report = api.call(
            "POST",
            f"/api/v1/models/{MODEL}/versions/2/explanations/",
            token=erin,
            expect=(202,),
            json={
                "method": "shap",
                "dataset": dataset["id"],
                "sample": {"n": 3, "seed": 0},
                "params": {"max_evals": 64, "seed": 7},
            },
        ).json()

        # Meanwhile v1: submitted, two approvals, deployed by its first rollout, serving.
        api.call("POST", f"/api/v1/models/{MODEL}/versions/1/submit/", token=erin, expect=(200, 201))
        assert api.approve(1, [rita, ravi]) == "approved"
        first = api.call("POST", f"/api/v1/models/{MODEL}/rollouts/", token=erin, expect=(201,), json={"candidate": 1})
        assert first.json()["status"] == "promoted"
        texts = ["这本书很好看", "质量太差了，不推荐", "物流很快，包装完好", "客服态度很差"] * 8
        assert {(answer["version"], answer["route"]) for answer in api.predict(erin, texts)} == {(1, "stable")}
        phase("v1 deployed and serving")

        def report_finished() -> bool:
            status = api.call("GET", f"/api/v1/explanations/{report['id']}/", token=erin).json()["status"]
            assert status not in ("failed", "cancelled"), status
            return status == "succeeded"

        wait_for(report_finished, timeout=150, interval=1, what="the SHAP report, run by the explanations worker")
        phase("report finished")
        api.call("POST", f"/api/v1/models/{MODEL}/versions/2/submit/", token=erin, expect=(200, 201))
        assert api.approve(2, [rita, ravi]) == "approved"

        # A rollout of v2 at 50 %: both versions answer; an abort sends every request back to v1.
        rollout = api.call(
            "POST",
            f"/api/v1/models/{MODEL}/rollouts/",
            token=erin,
            expect=(201,),
            json={"candidate": 2, "steps": [{"weight": 50, "bake_seconds": 3600}, {"weight": 100}]},
        ).json()
        assert rollout["status"] == "progressing"
        served = []

        def both_versions_answer() -> bool:
            # The candidate gets its share once this gunicorn worker has it loaded (warmed in the background).
            served.extend(api.predict(erin, texts))
            return {answer["version"] for answer in served} == {1, 2}

        wait_for(both_versions_answer, timeout=60, interval=0.5, what="answers of both versions at 50 %")
        assert all(answer["label"] in ("negative", "positive") for answer in served)
        phase("both versions served")
        aborted = api.call(
            "POST", f"/api/v1/rollouts/{rollout['id']}/abort/", token=erin, data={"reason": "make prod test: abort"}
        ).json()
        assert aborted["status"] == "aborted"
        after = api.predict(erin, texts)
        assert {(answer["version"], answer["route"]) for answer in after} == {(1, "stable")}

        phase("journey done")
        started = [psutil.Process(prod.pid), *descendants(prod.pid)]
    finally:
        if not started:  # a failure above: what to stop is still whatever it started
            started = [psutil.Process(prod.pid), *descendants(prod.pid)]
        prod.send_signal(signal.SIGTERM)
        try:
            status = prod.wait(timeout=90)
        except subprocess.TimeoutExpired:
            for process in started:
                process.kill()
            raise
    phase("stopped")
    output = log_path.read_text(errors="replace")
    assert status == 0, output[-3000:]
    assert "SIGTERM received: stopping" in output and "prod: stopped" in output
    # Every process it started (gunicorn's workers and the Celery pools included) is gone.
    assert len(started) >= 7
    assert [p.pid for p in started if not gone(p)] == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_process_that_dies_stops_the_rest_and_make_prod_exits_1(topology_broker, tmp_path):
    """GLASSBOX_PROCESSES picks a host's part (here beat alone: no migration,
    no web server); when a process dies on its own, the supervisor exits 1
    for systemd to restart the set, rather than run half a topology."""
    env = production_env(
        database_url="postgres://postgres@127.0.0.1:5432/unused",
        broker_url=topology_broker,
        data_dir=tmp_path,
        port=free_port(),
    )
    log_path = tmp_path / "prod.log"
    with open(log_path, "wb") as log:
        prod = subprocess.Popen(
            [sys.executable, "scripts/prod.py"],
            cwd=REPO,
            env={**env, "GLASSBOX_PROCESSES": "beat"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        started = wait_for(
            lambda: re.search(r"started beat \(pid (\d+)\)", log_path.read_text(errors="replace")),
            timeout=120,
            what="beat started by make prod",
        )
        os.kill(int(started.group(1)), signal.SIGKILL)
        assert prod.wait(timeout=60) == 1
    finally:
        if prod.poll() is None:
            prod.kill()
    output = log_path.read_text(errors="replace")
    assert "beat exited on its own" in output and "stopped after a failure" in output
    assert "manage.py migrate" not in output and "started web" not in output
