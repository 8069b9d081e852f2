"""Shared personas and helpers. Every test talks to the real PostgreSQL and
Redis of this machine (`make test` points the settings at them)."""

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import factory
import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from governance import roles
from governance import services as review_services
from governance.models import Team, TeamMembership
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

    @factory.post_generation
    def team(self, create, extracted, **kwargs):
        """`team=(name, role)` puts the user in that team; without it, a
        global engineer becomes a maintainer of the default team, as the
        migration that introduced teams did for every existing engineer (so
        the personas keep doing what they did). `team=False`: no team."""
        if not create or extracted is False:
            return
        if extracted:
            team_member(self, *extracted)
        elif self.groups.filter(name=roles.ENGINEER).exists():
            team_member(self, DEFAULT_TEAM, TeamMembership.Role.MAINTAINER)


DEFAULT_TEAM = "default"


def team_named(name: str) -> Team:
    return Team.objects.get_or_create(name=name)[0]


def team_member(user, team: str, role: str) -> TeamMembership:
    membership, _ = TeamMembership.objects.update_or_create(team=team_named(team), user=user, defaults={"role": role})
    return membership


class RegisteredModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RegisteredModel

    name = factory.Sequence(lambda n: f"sentiment-{n}")
    risk_tier = RegisteredModel.RiskTier.LOW
    team = factory.LazyFunction(lambda: team_named(DEFAULT_TEAM))
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


def token_for(user, **scoped) -> str:
    """A new API key of `user` (full access unless `scopes=`/`model_names=`).
    A fixture row like UserFactory's, written without an audit event (as
    DRF's Token rows were), so that tests counting events count only what
    they do; creating tokens through the service is tested in
    tests/governance/test_api_tokens.py."""
    import secrets

    from governance.accounts import key_hash
    from governance.models import ApiToken

    key = "gbx_" + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name="test", key_hash=key_hash(key), prefix=key[:8], **scoped)
    return key


def api_client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


@pytest.fixture
def api():
    return api_client_for


def page_client_for(user, *, enforce_csrf: bool = False) -> Client:
    """A browser-like client signed in as `user`, for the HTML pages."""
    client = Client(enforce_csrf_checks=enforce_csrf)
    client.force_login(user)
    return client


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


# Real approved versions, for the serving, rollout, fault and fuzzing tests.
def upload_skops(*, uploader, model_name: str, skops_path, **card) -> ModelVersion:
    """Upload a .skops file as a new version through the API."""
    handle = io.BytesIO(skops_path.read_bytes())
    handle.name = skops_path.name
    response = api_client_for(uploader).post(
        f"/api/v1/models/{model_name}/versions/",
        {"artifact": handle, "flavor": "sklearn", **card},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    return ModelVersion.objects.get(model__name=model_name, number=response.json()["version"])


def approve(version: ModelVersion, *, submitter, reviewer) -> ModelVersion:
    """Take a registered version through review to approved (low risk: one approval)."""
    review_services.review_submit(actor=submitter, version=version)
    review_services.decision_record(actor=reviewer, version=version, decision="approve", comment="looks fine")
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.APPROVED
    return version


def resaved_skops(skops_path, folder):
    """The same pipeline saved again with zip compression: other bytes (a
    registry refuses an artifact it already holds), the same predictions."""
    import skops.io

    from registry.predictors import load_predictor

    copy = folder / f"resaved-{skops_path.name}"
    skops.io.dump(load_predictor(skops_path, "sklearn").model, copy, compression=zipfile.ZIP_DEFLATED)
    return copy


@pytest.fixture(scope="session")
def resaved_demo_skops(demo_models, tmp_path_factory):
    """The demo pipeline saved again once per session: the same bytes in
    every test, so the registry's per-digest load-check memo applies."""
    return resaved_skops(demo_models["sklearn_skops"], tmp_path_factory.mktemp("resaved"))


@pytest.fixture
def served_model(engineer, engineer2, reviewer, demo_models, resaved_demo_skops) -> RegisteredModel:
    """`zh-serving` (low risk) with two approved versions of the demo TF-IDF
    pipeline, v1 and v2 (the same pipeline saved twice), neither deployed yet."""
    model = RegisteredModelFactory(name="zh-serving", created_by=engineer)
    for path in (demo_models["sklearn_skops"], resaved_demo_skops):
        version = upload_skops(uploader=engineer, model_name=model.name, skops_path=path)
        approve(version, submitter=engineer2, reviewer=reviewer)
    return model


@pytest.fixture
def serving_env(settings):
    """For tests that serve predictions: no background log thread (rows are
    written by flush_prediction_logs() in the test's own transaction) and no
    routing cached from other tests."""
    from rollouts import prediction_log, routing, serving_cache

    settings.GLASSBOX_PREDICTION_LOG_FLUSH_SECONDS = 0
    prediction_log.reset_writer()
    routing.clear_routing_cache()
    serving_cache.clear_permission_cache()
    yield
    prediction_log.reset_writer()
    routing.clear_routing_cache()
    serving_cache.clear_permission_cache()


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


def make_tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
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


def service_env(**extra: str) -> dict[str, str]:
    """The environment for a process of ours (a Celery worker, gunicorn)
    that must use the test database, broker and data folder."""
    db = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "GLASSBOX_DATA_DIR": str(settings.DATA_DIR),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class WorkerPool:
    """Real Celery worker processes on this machine's Redis, reading and
    writing the test database. Each runs in its own process group, so that
    `kill(name)` can SIGKILL a whole worker (parent and pool children) the
    way a machine dies."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.processes: dict[str, subprocess.Popen] = {}

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, name: str, *, beat: bool = False, env: dict | None = None) -> subprocess.Popen:
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
            command += ["-B", "-s", str(self.folder / f"{name}-beat-schedule")]
        with open(self.folder / f"{name}.log", "wb") as out:
            process = subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                env=service_env(**(env or {})),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        deadline = time.monotonic() + 60
        while "ready." not in self.log(name):
            if process.poll() is not None or time.monotonic() > deadline:
                self.kill(name)
                pytest.fail(f"worker {name} did not start:\n{self.log(name)[-3000:]}")
            time.sleep(0.2)
        return process

    def kill(self, name: str) -> None:
        process = self.processes[name]
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=20)

    def stop_all(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    self.kill(name)


@pytest.fixture
def worker_pool(committed_db, tmp_path):
    """Start real Celery workers on demand: `start(name, beat=False, env={})`
    returns the process, `log(name)` its output, `kill(name)` kills it
    without warning. All are stopped at the end of the test."""
    from glassbox.celery import app

    app.control.purge()  # leftovers of earlier tests refer to rows that are gone
    pool = WorkerPool(tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
def worker_process(worker_pool):
    """One real Celery worker for the whole test. Yields a function returning
    its log so far."""
    worker_pool.start("test")
    return lambda: worker_pool.log("test")


def wait_for(condition, *, timeout: float = 60, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


# --- the identity provider (OpenID Connect) --------------------------------------

OIDC_CLIENT_ID = "glassbox-tests"
OIDC_CLIENT_SECRET = "client-secret-for-tests-only"
IDP_PASSWORD = "idp password for tests"


class IdentityProvider:
    """The test provider process (tests/identity_provider.py) and its people."""

    def __init__(self, url: str, users_file: Path):
        self.url = url
        self.users_file = users_file

    def set_people(self, people: dict[str, dict]) -> None:
        """Who exists at the provider now: username -> {"groups": [...], ...}."""
        import json

        self.users_file.write_text(
            json.dumps({name: {"password": IDP_PASSWORD, **person} for name, person in people.items()})
        )


@pytest.fixture(scope="session")
def identity_provider(tmp_path_factory):
    """One real OpenID Connect provider process on loopback for the session."""
    folder = tmp_path_factory.mktemp("idp")
    users, ready = folder / "users.json", folder / "ready.txt"
    provider = IdentityProvider("", users)
    provider.set_people({})
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(settings.BASE_DIR) / "tests" / "identity_provider.py"),
            "--users",
            str(users),
            "--client-id",
            OIDC_CLIENT_ID,
            "--client-secret",
            OIDC_CLIENT_SECRET,
            "--ready-file",
            str(ready),
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while not (ready.exists() and ready.read_text()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the test identity provider did not start (exit code {process.poll()})")
            time.sleep(0.05)
        provider.url = ready.read_text()
        yield provider
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def oidc(settings, identity_provider):
    """Glassbox pointed at the test provider, as GLASSBOX_OIDC_* would set it."""
    url = identity_provider.url
    settings.GLASSBOX_OIDC_ENABLED = True
    settings.GLASSBOX_OIDC_ISSUER = url
    settings.GLASSBOX_OIDC_PROVIDER_NAME = "Test IdP"
    settings.OIDC_RP_CLIENT_ID = OIDC_CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = OIDC_CLIENT_SECRET
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{url}/authorize"
    settings.OIDC_OP_TOKEN_ENDPOINT = f"{url}/token"
    settings.OIDC_OP_USER_ENDPOINT = f"{url}/userinfo"
    settings.OIDC_OP_JWKS_ENDPOINT = f"{url}/jwks"
    settings.GLASSBOX_OIDC_GROUP_ROLES = {"ml-engineers": "engineer", "model-risk": "reviewer", "risk-heads": "manager"}
    identity_provider.set_people({})
    return identity_provider
