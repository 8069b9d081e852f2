from governance.models import AuditEvent
from registry.models import RegisteredModel


def test_engineer_registers_a_model(api, engineer):
    response = api(engineer).post(
        "/api/v1/models/",
        {"name": "zh-sentiment", "task": "text-classification", "risk_tier": "high", "description": "评论情感"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["name"] == "zh-sentiment"
    assert response.json()["risk_tier"] == "high"
    event = AuditEvent.objects.get(action="model.create")
    assert event.actor == engineer and event.model_name == "zh-sentiment"


def test_duplicate_model_name_is_a_conflict(api, engineer, sentiment_model):
    response = api(engineer).post("/api/v1/models/", {"name": sentiment_model.name, "risk_tier": "low"}, format="json")
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]
    assert RegisteredModel.objects.count() == 1


def test_name_that_is_not_a_slug_is_refused(api, engineer):
    for bad in ["Has Spaces", "../etc", "UPPER", "x" * 101, "名字", "-lead", "tail-", "a\x00b"]:
        response = api(engineer).post("/api/v1/models/", {"name": bad, "risk_tier": "low"}, format="json")
        assert response.status_code == 400, bad
        assert response.json()["detail"]
    assert not RegisteredModel.objects.exists()


def test_unknown_risk_tier_is_refused(api, engineer):
    response = api(engineer).post("/api/v1/models/", {"name": "ok-name", "risk_tier": "extreme"}, format="json")
    assert response.status_code == 400
    assert "risk_tier" in response.json()["detail"]


def test_reviewer_and_manager_cannot_register_models(api, reviewer, manager):
    for user in (reviewer, manager):
        response = api(user).post("/api/v1/models/", {"name": f"by-{user.username}", "risk_tier": "low"}, format="json")
        assert response.status_code == 403
        assert response.json()["detail"]
    assert not RegisteredModel.objects.exists()
    assert AuditEvent.objects.filter(action="model.create", outcome="denied").count() == 2


def test_anonymous_gets_401_and_outsider_403(api, outsider, sentiment_model):
    assert api(None).get("/api/v1/models/").status_code == 401
    response = api(outsider).get("/api/v1/models/")
    assert response.status_code == 403
    assert "role" in response.json()["detail"]


def test_every_role_reads_models(api, engineer, reviewer, manager, sentiment_model):
    for user in (engineer, reviewer, manager):
        response = api(user).get("/api/v1/models/")
        assert response.status_code == 200
        assert [m["name"] for m in response.json()["results"]] == ["zh-sentiment"]
    detail = api(reviewer).get("/api/v1/models/zh-sentiment/")
    assert detail.status_code == 200 and detail.json()["versions"] == []
    assert api(reviewer).get("/api/v1/models/nope/").status_code == 404
