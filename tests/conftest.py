"""Shared personas and helpers. Every test talks to the real PostgreSQL and
Redis of this machine (`make test` points the settings at them)."""

import io
import os
import zipfile
from pathlib import Path

import factory
import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from governance import roles
from registry.models import ModelVersion, RegisteredModel

DEMO_MODEL_CACHE = Path(settings.BASE_DIR) / "var" / "test-demo-models"


def pytest_report_header(config):
    db = settings.DATABASES["default"]
    return [
        f"glassbox: database {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('NAME')}, broker {settings.CELERY_BROKER_URL}, "
        f"inference backend {settings.GLASSBOX_INFERENCE_BACKEND} on device {settings.GLASSBOX_DEVICE}"
    ]


@pytest.fixture(scope="session", autouse=True)
def _real_services_only():
    # The suite exists to prove the platform on its production stack.
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.exit("Run the tests with `make test`: they need DATABASE_URL pointing at PostgreSQL.", returncode=2)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.test")
    password = factory.django.Password("correct horse battery staple")

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.add(Group.objects.get(name=extracted))


class RegisteredModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RegisteredModel

    name = factory.Sequence(lambda n: f"sentiment-{n}")
    risk_tier = RegisteredModel.RiskTier.LOW
    created_by = factory.SubFactory(UserFactory, role=roles.ENGINEER)


class ModelVersionFactory(factory.django.DjangoModelFactory):
    """A version row with no artifact behind it: for tests of what happens
    after an upload (reviews, rollouts), where a real upload's load check
    would only cost seconds. Uploads themselves are tested through the API."""

    class Meta:
        model = ModelVersion

    model = factory.SubFactory(RegisteredModelFactory)
    number = factory.LazyAttribute(lambda v: v.model.versions.count() + 1)
    flavor = ModelVersion.Flavor.SKLEARN
    metrics = factory.LazyFunction(lambda: {"accuracy": 0.87})
    labels = factory.LazyFunction(lambda: ["negative", "positive"])
    artifact_sha256 = factory.Faker("sha256")
    artifact_size = 123_456
    artifact_filename = "model.skops"
    artifact_key = factory.LazyAttribute(lambda v: f"models/{v.artifact_sha256[:2]}/{v.artifact_sha256}.zip")
    artifact_format = "zip"
    files = factory.LazyFunction(lambda: [{"name": "model.skops", "size": 123_456}])
    created_by = factory.LazyAttribute(lambda v: v.model.created_by)


# The personas every test shares.
@pytest.fixture
def engineer(db):
    return UserFactory(username="erin", role=roles.ENGINEER)


@pytest.fixture
def engineer2(db):
    return UserFactory(username="eli", role=roles.ENGINEER)


@pytest.fixture
def reviewer(db):
    return UserFactory(username="rita", role=roles.REVIEWER)


@pytest.fixture
def reviewer2(db):
    return UserFactory(username="ravi", role=roles.REVIEWER)


@pytest.fixture
def manager(db):
    return UserFactory(username="max", role=roles.MANAGER)


@pytest.fixture
def outsider(db):
    """Logged in, but holds no Glassbox role."""
    return UserFactory(username="olga")


def api_client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api():
    return api_client_for


@pytest.fixture
def sentiment_model(engineer):
    return RegisteredModelFactory(name="zh-sentiment", created_by=engineer)


@pytest.fixture(scope="session")
def demo_models():
    """The quick demo models (a char BERT and a TF-IDF pipeline), trained
    once and cached between runs like `make run` does."""
    from registry.demo_training import train_demo_models

    manifest = train_demo_models(DEMO_MODEL_CACHE, quick=True)
    return {
        "bert_zip": DEMO_MODEL_CACHE / manifest["bert"]["artifact"],
        "sklearn_skops": DEMO_MODEL_CACHE / manifest["sklearn"]["artifact"],
        "holdout_csv": DEMO_MODEL_CACHE / manifest["holdout"],
        "manifest": manifest,
    }


def stored_files() -> set[str]:
    """Every file under the artifact store, cache and upload area (to prove
    a refused upload leaves nothing behind)."""
    found = set()
    for root in (settings.ARTIFACT_ROOT, settings.ARTIFACT_CACHE_DIR, Path(settings.FILE_UPLOAD_TEMP_DIR)):
        for dirpath, _, filenames in os.walk(root):
            found.update(os.path.join(dirpath, name) for name in filenames)
        for dirpath, dirnames, _ in os.walk(root):
            found.update(os.path.join(dirpath, name) + "/" for name in dirnames if name.startswith(".staging"))
    return found


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def unpack_zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture
def committed_db(transactional_db):
    """For tests whose threads need committed rows (concurrency). The flush
    that ends such a test must empty the append-only audit table, so triggers
    are switched off for this connection just for that flush; the next test
    switches them back on (see _audit_triggers_enforced)."""
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    _trigger_state["reset_needed"] = True


_trigger_state = {"reset_needed": False}


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache: sign-in failure counts (and any
    other cached state) of one test must not refuse another's logins."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture(autouse=True)
def _audit_triggers_enforced(django_db_blocker):
    if _trigger_state["reset_needed"]:
        with django_db_blocker.unblock():
            with connection.cursor() as cursor:
                cursor.execute("SET session_replication_role = DEFAULT")
        _trigger_state["reset_needed"] = False
    yield


@pytest.fixture
def worker_process(committed_db, tmp_path):
    """A real Celery worker process on this machine's Redis, reading and
    writing the test database. Yields a function returning its log so far."""
    import subprocess
    import sys
    import time

    from glassbox.celery import app

    app.control.purge()  # leftovers of earlier tests refer to rows that are gone
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "GLASSBOX_DATA_DIR": str(settings.DATA_DIR),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
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
                f"test-{os.getpid()}@%h",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def read_log() -> str:
        return log_path.read_text(errors="replace")

    deadline = time.monotonic() + 60
    while "ready." not in read_log():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the worker did not start:\n{read_log()[-3000:]}")
        time.sleep(0.2)
    yield read_log
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_for(condition, *, timeout: float = 60, interval: float = 0.2, what: str = "condition"):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")
