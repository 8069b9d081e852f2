"""Every API error body carries a machine-readable `code` next to `detail`
(glassbox/api_errors.py): one representative failure per kind, whichever
layer refuses it - authentication, permissions, routing, parsing,
validation, a service's domain rule - and each code is in the README's
"Error codes" table."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache

from governance import services as review_services
from rollouts import routing
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, UserFactory, api_client_for

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


@pytest.fixture
def world(db, engineer, engineer2):
    model = RegisteredModelFactory(name="zh-codes", created_by=engineer)
    in_review = ModelVersionFactory(model=model)
    review_services.review_submit(actor=engineer2, version=in_review)
    RegisteredModelFactory(name="zh-archived", created_by=engineer)
    routing.clear_routing_cache()
    admin = UserFactory(username="ada", role="admin", team=False)
    assert api_client_for(admin).post("/api/v1/models/zh-archived/archive/").json()["archived"]
    return {"engineer": engineer, "outsider": UserFactory(username="olga"), "in_review": in_review.number}


def anonymous():
    return api_client_for(None)


def bad_token():
    client = api_client_for(None)
    client.credentials(HTTP_AUTHORIZATION="Token gbx_nothing")
    return client


CASES = [
    # (what, client, method, path, body, format, status, code)
    ("no credentials", anonymous, "get", "/api/v1/models/", None, None, 401, "not_authenticated"),
    ("unknown token", bad_token, "get", "/api/v1/models/", None, None, 401, "authentication_failed"),
    ("no role", "outsider", "get", "/api/v1/models/", None, None, 403, "permission_denied"),
    ("unknown model", "engineer", "get", "/api/v1/models/nope/", None, None, 404, "not_found"),
    ("unmatched path", "engineer", "get", "/api/v1/nothing-here/", None, None, 404, "not_found"),
    ("method", "engineer", "delete", "/api/v1/models/", None, None, 405, "method_not_allowed"),
    ("missing fields", "engineer", "post", "/api/v1/models/", {}, "json", 400, "validation_error"),
    ("malformed JSON", "engineer", "post", "/api/v1/models/", "{not json", "raw-json", 400, "parse_error"),
    (
        "media type",
        "engineer",
        "post",
        "/api/v1/auth/tokens/",
        {"name": "x"},
        "multipart",
        415,
        "unsupported_media_type",
    ),
    ("bad cursor", "engineer", "get", "/api/v1/models/?cursor=%%%", None, None, 400, "invalid_cursor"),
    (
        "service input",
        "engineer",
        "post",
        "/api/v1/auth/tokens/",
        {"name": "app", "scopes": ["predict"]},
        "json",
        400,
        "scope_without_models",
    ),
    (
        "state",
        "engineer",
        "post",
        "/api/v1/models/zh-codes/versions/{in_review}/submit/",
        None,
        None,
        409,
        "invalid_transition",
    ),
    (
        "card frozen",
        "engineer",
        "patch",
        "/api/v1/models/zh-codes/versions/{in_review}/",
        {"limitations": "x"},
        "json",
        409,
        "version_not_editable",
    ),
    (
        "archived",
        "engineer",
        "post",
        "/api/v1/models/zh-archived/predict/",
        {"inputs": ["好"]},
        "json",
        409,
        "model_archived",
    ),
    (
        "password",
        anonymous,
        "post",
        "/api/v1/auth/token/",
        {"username": "erin", "password": "no"},
        "json",
        400,
        "invalid_credentials",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_each_kind_of_failure_answers_its_code(world, case):
    _, who, method, path, body, kind, status, code = case
    client = who() if callable(who) else api_client_for(world[who])
    path = path.format(**world)
    send = getattr(client, method)
    if kind == "raw-json":
        response = send(path, body, content_type="application/json")
    elif body is not None:
        response = send(path, body, format=kind)
    else:
        response = send(path)

    assert response.status_code == status, response.content
    answer = response.json()
    assert answer["code"] == code and isinstance(answer["detail"], str) and answer["detail"]


def test_too_many_sign_ins_answer_rate_limited(db, engineer, settings):
    settings.GLASSBOX_SIGNIN_MAX_FAILURES = 2
    cache.clear()
    client = anonymous()
    answers = [
        client.post("/api/v1/auth/token/", {"username": "erin", "password": "wrong"}, format="json") for _ in range(3)
    ]

    assert answers[-1].status_code == 429 and answers[-1].json()["code"] == "rate_limited"
    assert answers[-1]["Retry-After"]


def test_a_body_over_the_memory_limit_answers_request_too_large(db, engineer, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api_client_for(engineer).post(
        "/api/v1/models/", {"name": "big", "risk_tier": "low", "description": "长" * 2000}, format="json"
    )

    assert response.status_code == 413 and response.json()["code"] == "request_too_large"


def test_every_code_a_test_expects_is_in_the_readme_table():
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    start = readme.index("### Error codes")
    table = readme[start : readme.index("\n#", start + 1)]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    documented = {code for cell in first_cells for code in re.findall(r"`([^`]+)`", cell)}
    expected = {case[-1] for case in CASES} | {
        "rate_limited",
        "request_too_large",
        "idempotency_conflict",
        "idempotency_in_progress",
        "invalid_page_size",
        "rollout_active",
        "token_expiry_too_far",
        "report_too_large",
    }
    assert all(SNAKE.match(code) for code in documented)
    assert expected <= documented, sorted(expected - documented)
