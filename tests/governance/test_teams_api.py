"""Teams: creating them, their members, which team owns a model, and the
refusals (a clear 4xx, nothing changed, the attempt on the trail)."""

import pytest

from governance.models import AuditEvent, Team, TeamMembership
from registry.models import RegisteredModel
from tests.conftest import RegisteredModelFactory, UserFactory, team_member, team_named


@pytest.fixture
def admin(db):
    return UserFactory(username="ada", role="admin")


def denied(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action, outcome="denied").latest("id")


def test_admin_creates_a_team_and_it_is_audited(api, admin):
    response = api(admin).post("/api/v1/teams/", {"name": "payments"}, format="json")

    assert response.status_code == 201 and response.json()["name"] == "payments"
    event = AuditEvent.objects.get(action="team.create", outcome="ok")
    assert (event.actor, event.object_label) == (admin, "payments")


def test_only_admins_create_teams(api, engineer):
    response = api(engineer).post("/api/v1/teams/", {"name": "payments"}, format="json")

    assert response.status_code == 403
    assert not Team.objects.filter(name="payments").exists()
    assert denied("team.create").detail["reason"] == "Only admins may create teams."


@pytest.mark.parametrize(("name", "status"), [("Not A Slug", 400), ("default", 409)])
def test_a_bad_or_taken_team_name_is_refused(api, admin, engineer, name, status):
    response = api(admin).post("/api/v1/teams/", {"name": name}, format="json")

    assert response.status_code == status and response.json()["detail"]
    assert Team.objects.count() == 1  # `default`, the engineer's


def test_maintainer_adds_a_member_and_changes_their_role(api, engineer, engineer2):
    UserFactory(username="vic")
    added = api(engineer).post("/api/v1/teams/default/members/", {"username": "vic", "role": "viewer"}, format="json")
    changed = api(engineer).post(
        "/api/v1/teams/default/members/", {"username": "vic", "role": "engineer"}, format="json"
    )

    assert (added.status_code, changed.status_code) == (201, 200)
    assert TeamMembership.objects.get(user__username="vic").role == "engineer"
    role_change = AuditEvent.objects.get(action="team.member_role")
    assert role_change.changes == {"before": {"role": "viewer"}, "after": {"role": "engineer"}}
    members = api(engineer).get("/api/v1/teams/default/").json()["members"]
    assert [(m["username"], m["role"]) for m in members] == [
        ("eli", "maintainer"),
        ("erin", "maintainer"),
        ("vic", "engineer"),
    ]


def test_a_team_engineer_cannot_manage_members(api, engineer):
    eve = UserFactory(username="eve", role="engineer", team=("default", "engineer"))
    UserFactory(username="vic")

    response = api(eve).post("/api/v1/teams/default/members/", {"username": "vic", "role": "viewer"}, format="json")

    assert response.status_code == 403
    assert not TeamMembership.objects.filter(user__username="vic").exists()
    assert "maintainers of team default" in denied("team.member_add").detail["reason"]


def test_unknown_user_is_400_and_unknown_or_hidden_team_404(api, engineer):
    other = UserFactory(username="otto", role="engineer", team=("payments", "maintainer"))

    unknown_user = api(engineer).post(
        "/api/v1/teams/default/members/", {"username": "nobody", "role": "viewer"}, format="json"
    )
    unknown_team = api(engineer).post(
        "/api/v1/teams/nope/members/", {"username": "otto", "role": "viewer"}, format="json"
    )
    # A team the caller does not belong to is not revealed.
    hidden_team = api(other).post(
        "/api/v1/teams/default/members/", {"username": "otto", "role": "viewer"}, format="json"
    )

    assert (unknown_user.status_code, unknown_team.status_code, hidden_team.status_code) == (400, 404, 404)
    assert unknown_user.json()["field"] == "username"
    assert denied("team.member_add").detail["username"] == "nobody"
    assert TeamMembership.objects.count() == 2


def test_removing_a_member_and_the_last_maintainer_stays(api, engineer):
    team_member(UserFactory(username="vic"), "default", "viewer")

    removed = api(engineer).delete("/api/v1/teams/default/members/vic/")
    last = api(engineer).delete("/api/v1/teams/default/members/erin/")
    demoted = api(engineer).post(
        "/api/v1/teams/default/members/", {"username": "erin", "role": "viewer"}, format="json"
    )

    assert removed.status_code == 204
    assert AuditEvent.objects.get(action="team.member_remove", outcome="ok").changes["before"]["username"] == "vic"
    assert last.status_code == 409 and last.json()["code"] == "last_maintainer"
    assert demoted.status_code == 409 and demoted.json()["code"] == "last_maintainer"
    assert TeamMembership.objects.get(user=engineer).role == "maintainer"
    assert "last maintainer" in denied("team.member_remove").detail["reason"]


def test_removing_someone_who_is_not_a_member_is_400(api, engineer):
    UserFactory(username="vic")
    response = api(engineer).delete("/api/v1/teams/default/members/vic/")
    assert response.status_code == 400 and "not a member" in response.json()["detail"]


def test_teams_list_shows_the_callers_teams_and_everything_to_managers(api, engineer, manager, outsider):
    team_named("payments")

    assert [t["name"] for t in api(engineer).get("/api/v1/teams/").json()["results"]] == ["default"]
    assert [t["name"] for t in api(manager).get("/api/v1/teams/").json()["results"]] == ["default", "payments"]
    assert api(outsider).get("/api/v1/teams/").status_code == 403


# --- which team owns a model -------------------------------------------------------------


def register(api, user, **body):
    return api(user).post("/api/v1/models/", {"name": "fresh", "risk_tier": "low", **body}, format="json")


def test_a_model_goes_to_the_callers_only_team(api, engineer):
    response = register(api, engineer)

    assert response.status_code == 201 and response.json()["team"] == "default"
    assert AuditEvent.objects.get(action="model.create").changes["after"]["team"] == "default"


def test_a_caller_in_several_teams_must_name_one(api, engineer):
    team_member(engineer, "payments", "engineer")

    ambiguous = register(api, engineer)
    named = register(api, engineer, team="payments")

    assert ambiguous.status_code == 400 and ambiguous.json()["code"] == "team_required"
    assert named.status_code == 201 and RegisteredModel.objects.get(name="fresh").team.name == "payments"


@pytest.mark.parametrize(("team", "status"), [("payments", 403), ("nope", 400)])
def test_registering_into_a_team_one_is_not_an_engineer_of_is_refused(api, engineer, team, status):
    team_named("payments")

    response = register(api, engineer, team=team)

    assert response.status_code == status and response.json()["detail"]
    assert not RegisteredModel.objects.exists()
    assert denied("model.create").detail["team"] == team


def test_a_viewer_cannot_register_models(api, db):
    viewer = UserFactory(username="vic", team=("default", "viewer"))
    assert register(api, viewer).status_code == 403


def test_admin_moves_a_model_to_another_team(api, admin, engineer):
    model = RegisteredModelFactory(name="zh-sentiment", created_by=engineer)
    team_named("payments")

    refused = api(engineer).patch("/api/v1/models/zh-sentiment/", {"team": "payments"}, format="json")
    unknown = api(admin).patch("/api/v1/models/zh-sentiment/", {"team": "nope"}, format="json")
    moved = api(admin).patch("/api/v1/models/zh-sentiment/", {"team": "payments"}, format="json")

    assert (refused.status_code, unknown.status_code, moved.status_code) == (403, 400, 200)
    model.refresh_from_db()
    assert model.team.name == "payments" and moved.json()["team"] == "payments"
    event = AuditEvent.objects.get(action="model.team_move", outcome="ok")
    assert event.changes == {"before": {"team": "default"}, "after": {"team": "payments"}}
    assert event.model_name == "zh-sentiment"
    # erin is no longer in the owning team: the model is gone from her view.
    assert api(engineer).get("/api/v1/models/zh-sentiment/").status_code == 404


def test_lists_show_only_what_the_caller_may_read(api, engineer):
    RegisteredModelFactory(name="zh-sentiment", created_by=engineer)
    otto = UserFactory(username="otto", role="engineer", team=("payments", "engineer"))
    RegisteredModelFactory(name="card-fraud", created_by=otto, team=team_named("payments"))

    assert [m["name"] for m in api(engineer).get("/api/v1/models/").json()["results"]] == ["zh-sentiment"]
    assert [m["name"] for m in api(otto).get("/api/v1/models/").json()["results"]] == ["card-fraud"]
    assert api(otto).get("/api/v1/models/zh-sentiment/").status_code == 404
    assert api(otto).get("/api/v1/models/zh-sentiment/versions/").status_code == 404
