"""API tokens (/api/v1/auth/tokens/): created with a key shown once and
stored hashed, listed with their last use, revoked; expired and revoked
keys refused; scoped tokens reach predict and feedback on their models only;
the one-second serving cache honours revocation; DRF's old keys carried over."""

import hashlib
from datetime import timedelta

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from governance import token_auth
from governance.accounts import key_hash, token_create
from governance.models import ApiToken, AuditEvent
from rollouts.prediction_log import flush_prediction_logs
from tests.conftest import RegisteredModelFactory, api_client_for
from tests.rollouts.rollout_helpers import deploy

TEXTS = ["质量很好，非常满意", "太差了，再也不买了"]


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_created_token_shows_its_key_once_and_stores_only_its_hash(engineer):
    client = api_client_for(engineer)
    response = client.post(
        "/api/v1/auth/tokens/", {"name": "laptop", "expires_at": "2099-01-01T00:00:00Z"}, format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    key = body["key"]
    assert key.startswith("gbx_") and len(key) > 40
    assert (body["name"], body["scopes"], body["models"], body["prefix"]) == ("laptop", [], [], key[:8])
    token = ApiToken.objects.get(pk=body["id"])
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(ApiToken.objects.filter(pk=token.pk).values().get())

    listed = client.get("/api/v1/auth/tokens/").json()["results"]
    laptop = next(item for item in listed if item["id"] == token.pk)
    assert "key" not in laptop and laptop["last_used_at"] is None and laptop["expires_at"].startswith("2099")
    # The new key works, and its use is recorded.
    assert client_with(key).get("/api/v1/models/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    event = AuditEvent.objects.filter(action="token.create", object_id=str(token.pk)).get()
    assert event.actor_username == engineer.username and event.object_label == "laptop"
    for values in AuditEvent.objects.values_list():
        assert key not in str(values)


def test_the_password_exchange_still_answers_a_working_full_access_key(engineer):
    engineer.set_password("correct horse battery staple")
    engineer.save()
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": engineer.username, "password": "correct horse battery staple"}
    )

    assert response.status_code == 200, response.json()
    key = response.json()["token"]
    token = ApiToken.objects.get(key_hash=key_hash(key))
    assert token.user == engineer and not token.is_scoped and token.name == "password sign-in"
    assert client_with(key).get("/api/v1/models/").status_code == 200


def test_a_revoked_token_is_refused_and_both_are_audited(engineer):
    token, key = token_create(actor=engineer, name="ci")
    client = client_with(key)
    assert client.get("/api/v1/models/").status_code == 200

    assert client.delete(f"/api/v1/auth/tokens/{token.pk}/").status_code == 204
    response = client.get("/api/v1/models/")

    assert response.status_code == 401
    assert response.json() == {"detail": "This token is revoked.", "code": "token_revoked"}
    assert AuditEvent.objects.filter(action="token.revoke", object_id=str(token.pk), outcome="ok").exists()
    refusal = AuditEvent.objects.filter(action="token.refuse", object_id=str(token.pk)).get()
    assert refusal.outcome == "denied" and refusal.detail["reason"] == "revoked"
    listed = api_client_for(engineer).get("/api/v1/auth/tokens/").json()["results"]
    assert next(item for item in listed if item["id"] == token.pk)["revoked"] is True


def test_an_expired_token_is_refused(engineer):
    token, key = token_create(actor=engineer, name="ci", expires_at=timezone.now() + timedelta(days=1))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = client_with(key).get("/api/v1/models/")

    assert response.status_code == 401 and response.json()["code"] == "token_expired"


def test_nobody_revokes_another_users_token(engineer, reviewer):
    token, key = token_create(actor=engineer, name="ci")

    response = api_client_for(reviewer).delete(f"/api/v1/auth/tokens/{token.pk}/")

    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None and client_with(key).get("/api/v1/models/").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "app", "scopes": ["predict"]}, 400, "scope_without_models"),
        ({"name": "app", "models": ["zh-sentiment"]}, 400, "models_without_scope"),
        ({"name": "app", "scopes": ["predict"], "models": ["no-such-model"]}, 404, "unknown_model"),
        ({"name": "app", "expires_at": "2001-01-01T00:00:00Z"}, 400, "expired"),
        ({"name": " "}, 400, None),
        ({"name": "app", "scopes": ["admin"], "models": ["zh-sentiment"]}, 400, None),
    ],
)
def test_bad_token_requests_are_refused_and_nothing_is_created(engineer, sentiment_model, body, status, code):
    before = ApiToken.objects.count()
    client = api_client_for(engineer)

    response = client.post("/api/v1/auth/tokens/", body, format="json")

    assert response.status_code == status, response.json()
    assert response.json()["detail"]
    if code:
        assert response.json()["code"] == code
    assert ApiToken.objects.count() == before + 1  # only api_client_for's own token


def test_only_who_may_start_rollouts_issues_scoped_tokens(engineer, reviewer, sentiment_model):
    body = {"name": "shop", "scopes": ["predict"], "models": ["zh-sentiment"]}

    refused = api_client_for(reviewer).post("/api/v1/auth/tokens/", body, format="json")
    allowed = api_client_for(engineer).post("/api/v1/auth/tokens/", body, format="json")

    assert refused.status_code == 403 and refused.json()["code"] == "token_not_permitted"
    assert not ApiToken.objects.filter(user=reviewer, name="shop").exists()
    denial = AuditEvent.objects.filter(action="token.create", outcome="denied").get()
    assert denial.actor_username == reviewer.username and denial.model_name == "zh-sentiment"
    assert allowed.status_code == 201 and allowed.json()["scopes"] == ["predict"]


@pytest.fixture
def deployed(served_model, engineer, serving_env):
    deploy(served_model, served_model.versions.get(number=1), actor=engineer)
    token_auth.clear_token_cache()
    yield served_model
    token_auth.clear_token_cache()


def test_a_scoped_token_predicts_and_sends_feedback_on_its_model_only(deployed, engineer):
    other = RegisteredModelFactory(name="zh-other", created_by=engineer)
    _, key = token_create(actor=engineer, name="shop", scopes=["predict", "feedback"], model_names=["zh-serving"])
    client = client_with(key)

    predicted = client.post("/api/v1/models/zh-serving/predict/", {"inputs": TEXTS}, format="json")
    assert predicted.status_code == 200, predicted.json()
    prediction_id = predicted.json()["predictions"][0]["prediction_id"]
    assert flush_prediction_logs()
    feedback = client.post(
        "/api/v1/models/zh-serving/feedback/",
        {"items": [{"prediction_id": prediction_id, "label": "positive"}]},
        format="json",
    )
    assert feedback.status_code == 201, feedback.json()

    elsewhere = client.post(f"/api/v1/models/{other.name}/predict/", {"inputs": TEXTS}, format="json")
    assert elsewhere.status_code == 403 and elsewhere.json()["code"] == "token_model"
    reading = client.get("/api/v1/models/zh-serving/")
    assert reading.status_code == 403 and reading.json()["code"] == "token_scope"
    refusals = AuditEvent.objects.filter(action="token.refuse", outcome="denied")
    assert sorted(refusals.values_list("detail__reason", "model_name")) == [
        ("token_model", "zh-other"),
        ("token_scope", "zh-serving"),
    ]


def test_a_predict_only_token_cannot_send_feedback(deployed, engineer):
    _, key = token_create(actor=engineer, name="shop", scopes=["predict"], model_names=["zh-serving"])

    response = client_with(key).post("/api/v1/models/zh-serving/feedback/", {"items": []}, format="json")

    assert response.status_code == 403 and response.json()["code"] == "token_scope"


def test_a_scoped_token_never_reaches_further_than_its_user(deployed, reviewer, engineer):
    # A token scoped by someone who may issue it, but whose own role cannot
    # predict, still cannot: scopes only narrow.
    token, key = token_create(actor=engineer, name="shop", scopes=["predict"], model_names=["zh-serving"])
    ApiToken.objects.filter(pk=token.pk).update(user=reviewer)

    response = client_with(key).post("/api/v1/models/zh-serving/predict/", {"inputs": TEXTS}, format="json")

    assert response.status_code == 403


class Clock:
    """A stand-in for the `time` module in governance.token_auth, so the
    test moves the serving cache's clock instead of sleeping."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_the_serving_cache_stops_a_revoked_token_within_its_ttl(deployed, engineer, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(token_auth, "time", clock)
    token, key = token_create(actor=engineer, name="shop", scopes=["predict"], model_names=["zh-serving"])
    client = client_with(key)
    assert client.post("/api/v1/models/zh-serving/predict/", {"inputs": TEXTS}, format="json").status_code == 200

    api_client_for(engineer).delete(f"/api/v1/auth/tokens/{token.pk}/")
    # Other routes refuse it at once; the predict path within its cache's TTL.
    assert client.get("/api/v1/auth/tokens/").status_code == 401
    clock.now += token_auth.CachedApiTokenAuthentication.TTL_SECONDS

    response = client.post("/api/v1/models/zh-serving/predict/", {"inputs": TEXTS}, format="json")
    assert response.status_code == 401 and response.json()["code"] == "token_revoked"


def test_drf_keys_are_carried_over_hashed_and_their_table_dropped(engineer):
    carry_over = __import__("governance.migrations.0009_carry_over_drf_tokens", fromlist=["carry_over"]).carry_over
    old_key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer NOT NULL,"
            " created timestamp with time zone NOT NULL)"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, now())", [old_key, engineer.pk])
    with connection.schema_editor() as editor:
        carry_over(django_apps, editor)

    token = ApiToken.objects.get(key_hash=key_hash(old_key))
    assert (token.user, token.name, token.prefix, token.is_scoped) == (engineer, "carried over", old_key[:8], False)
    assert "authtoken_token" not in connection.introspection.table_names()
    assert client_with(old_key).get("/api/v1/models/").status_code == 200
