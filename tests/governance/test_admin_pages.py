"""The Django admin's pages for the domain models: support staff can list,
search and open registered models, versions, explanation reports, rollouts
and audit events; nobody (a superuser included) can add, change or delete
them there, because every change goes through a service."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.forms.models import model_to_dict
from django.test import Client

from explanations.models import ExplanationReport
from governance.models import AuditEvent
from registry.models import ModelVersion, RegisteredModel
from rollouts import services as rollout_services
from rollouts.models import Rollout
from tests.conftest import UserFactory
from tests.explanations.reporting import make_report
from tests.governance.reviewing import decide, submitted_version

pytestmark = pytest.mark.django_db

ADMIN_PAGES = {
    RegisteredModel: "/admin/registry/registeredmodel/",
    ModelVersion: "/admin/registry/modelversion/",
    ExplanationReport: "/admin/explanations/explanationreport/",
    Rollout: "/admin/rollouts/rollout/",
    AuditEvent: "/admin/governance/auditevent/",
}


@pytest.fixture
def rows(engineer, reviewer) -> dict:
    """One row of each model the admin shows, made the way the platform makes them."""
    version = submitted_version(uploader=engineer, name="zh-sentiment")
    decide(reviewer, version, "approve")
    version.refresh_from_db()
    rollout = rollout_services.rollout_start(actor=engineer, model=version.model, candidate=version)
    report = make_report(version=version, requested_by=engineer)
    return {
        RegisteredModel: version.model,
        ModelVersion: version,
        ExplanationReport: report,
        Rollout: rollout,
        AuditEvent: AuditEvent.objects.filter(action="rollout.start").get(),
    }


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def support(db):
    """Staff, not superuser: may open the admin, and may view these five models only."""
    user = UserFactory(username="sam", is_staff=True)
    codenames = [f"view_{model._meta.model_name}" for model in ADMIN_PAGES]
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def snapshot() -> dict:
    return {model: [model_to_dict(row) for row in model.objects.order_by("pk")] for model in ADMIN_PAGES}


@pytest.mark.parametrize("who", ["superuser", "support"])
@pytest.mark.parametrize("model", list(ADMIN_PAGES), ids=lambda model: model._meta.label_lower)
def test_support_staff_can_list_search_and_open_each_page(request, rows, who, model):
    client = client_for(request.getfixturevalue(who))
    row = rows[model]

    listing = client.get(ADMIN_PAGES[model])
    opened = client.get(f"{ADMIN_PAGES[model]}{row.pk}/change/")

    assert listing.status_code == 200
    assert row.pk in [shown.pk for shown in listing.context["cl"].result_list]
    assert opened.status_code == 200
    assert str(row) in opened.content.decode()
    # Read-only: every field is shown as text, none as an input, and there is no save button.
    assert opened.context["adminform"].form.fields == {}
    assert 'name="_save"' not in opened.content.decode()
    assert f'href="{ADMIN_PAGES[model]}add/"' not in listing.content.decode()


@pytest.mark.parametrize(
    "model, query",
    [
        (RegisteredModel, "zh-sentiment"),
        (ModelVersion, "zh-sentiment"),
        (ExplanationReport, "zh-sentiment"),
        (Rollout, "zh-sentiment"),
        (AuditEvent, "rollout.start"),
    ],
    ids=lambda value: value if isinstance(value, str) else value._meta.label_lower,
)
def test_search_finds_the_row(rows, support, model, query):
    response = client_for(support).get(ADMIN_PAGES[model], {"q": query})

    assert response.status_code == 200
    assert rows[model].pk in [shown.pk for shown in response.context["cl"].result_list]


def test_staff_without_view_permission_sees_none_of_them(rows):
    staff = UserFactory(username="stan", is_staff=True)
    client = client_for(staff)

    for model, path in ADMIN_PAGES.items():
        assert client.get(path).status_code == 403
        assert client.get(f"{path}{rows[model].pk}/change/").status_code == 403


@pytest.mark.parametrize("persona", ["outsider", "engineer", "reviewer", "manager"])
def test_non_staff_are_sent_to_the_admin_sign_in(request, rows, persona):
    client = client_for(request.getfixturevalue(persona))

    for model, path in ADMIN_PAGES.items():
        for page in (path, f"{path}{rows[model].pk}/change/"):
            response = client.get(page)
            assert response.status_code == 302
            assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("model", list(ADMIN_PAGES), ids=lambda model: model._meta.label_lower)
def test_admin_writes_are_refused_and_change_nothing(rows, superuser, model):
    client = client_for(superuser)
    path, row = ADMIN_PAGES[model], rows[model]
    before, events_before, log_before = snapshot(), AuditEvent.objects.count(), LogEntry.objects.count()

    added = client.post(f"{path}add/", {"name": "sneaky", "status": "approved"})
    changed = client.post(f"{path}{row.pk}/change/", {"status": "approved", "risk_tier": "low", "_save": "Save"})
    deleted_page = client.get(f"{path}{row.pk}/delete/")
    deleted = client.post(f"{path}{row.pk}/delete/", {"post": "yes"})
    bulk = client.post(path, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"})

    assert (added.status_code, changed.status_code, deleted_page.status_code, deleted.status_code) == (
        403,
        403,
        403,
        403,
    )
    # The changelist offers no bulk actions at all: the POST is a plain page, not a deletion.
    assert bulk.status_code == 200 and bulk.context["action_form"] is None
    assert snapshot() == before
    assert LogEntry.objects.count() == log_before
    assert AuditEvent.objects.count() == events_before
