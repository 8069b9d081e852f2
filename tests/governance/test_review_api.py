"""The review workflow end to end over REST, and the `review` block that
every version's JSON carries."""

import io
import json

import yaml

from registry.models import ModelVersion
from tests.governance.reviewing import decide, new_version, submitted_version, version_path


def test_uploaded_version_goes_from_upload_to_approval_over_rest(api, engineer, reviewer, reviewer2, demo_models):
    assert api(engineer).post("/api/v1/models/", {"name": "zh-sentiment", "risk_tier": "medium"}).status_code == 201
    artifact = io.BytesIO(demo_models["sklearn_skops"].read_bytes())
    artifact.name = "m.skops"
    uploaded = api(engineer).post(
        "/api/v1/models/zh-sentiment/versions/",
        {"artifact": artifact, "flavor": "sklearn", "metrics": json.dumps({"accuracy": 0.8})},
        format="multipart",
    )
    assert uploaded.status_code == 201, uploaded.json()
    assert uploaded.json()["review"] is None and uploaded.json()["recertify_by"] is None
    base = "/api/v1/models/zh-sentiment/versions/1/"

    assert api(engineer).post(base + "submit/").json()["status"] == "in_review"
    first = api(reviewer).post(base + "decisions/", {"decision": "approve", "comment": "ok"}, format="json")
    assert first.status_code == 201 and first.json()["version_status"] == "in_review"
    second = api(reviewer2).post(base + "decisions/", {"decision": "approve"}, format="json")
    assert second.status_code == 201 and second.json()["version_status"] == "approved"

    body = api(reviewer).get(base).json()
    assert body["status"] == "approved"
    version = ModelVersion.objects.get()
    assert body["recertify_by"] == version.recertify_by.isoformat()
    review = body["review"]
    assert (review["status"], review["approvals"], review["required_approvals"]) == ("approved", 2, 2)
    assert review["missing_evidence"] == [] and review["closed_at"]
    assert [(d["reviewer"], d["decision"]) for d in review["decisions"]] == [("rita", "approve"), ("ravi", "approve")]


def test_version_json_shows_the_open_review_as_it_stands(api, engineer, reviewer, reviewer2):
    version = submitted_version(uploader=engineer, risk_tier="medium")
    decide(reviewer, version, "approve", "first look is good")

    review = api(reviewer2).get(version_path(version)).json()["review"]

    assert review["status"] == "open" and review["opened_by"] == "erin" and review["closed_at"] is None
    assert (review["approvals"], review["required_approvals"]) == (1, 2)
    assert review["decisions"][0]["comment"] == "first look is good"


def test_model_json_lists_each_versions_review(api, engineer, reviewer):
    version = submitted_version(uploader=engineer, name="listed")
    new_version(uploader=engineer, name="other")
    decide(reviewer, version, "approve")

    versions = api(reviewer).get("/api/v1/models/listed/versions/").json()["results"]

    assert [(v["version"], v["status"], v["review"]["status"]) for v in versions] == [(1, "approved", "approved")]


def test_every_refusal_is_json_with_a_detail(api, engineer, reviewer):
    version = new_version(uploader=engineer)

    response = api(reviewer).post(version_path(version, "decisions/"), "not json", content_type="application/json")

    assert response.status_code == 400 and isinstance(response.json()["detail"], str)


def test_openapi_schema_lists_the_review_paths(client, db):
    schema = yaml.safe_load(client.get("/api/schema/").content)
    paths = schema["paths"]

    assert "post" in paths["/api/v1/models/{name}/versions/{number}/submit/"]
    decisions = paths["/api/v1/models/{name}/versions/{number}/decisions/"]
    assert {"get", "post"} <= set(decisions)
    assert "review" in schema["components"]["schemas"]["VersionOutput"]["properties"]
