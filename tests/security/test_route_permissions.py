"""Object-level access, route by route: every route of the URLconf (API and
pages alike) is called as each of PERSONAS - anonymous; an outsider (signed
in, no role, no team); a maintainer, an engineer and a viewer of the team
that owns the model; an engineer of another team; a reviewer who is a member
of the owning team and one who is not; a manager - with GET and with every
write method the route takes, against real objects behind its path
parameters, and each answer must be the one EXPECTED lists.

A model the caller may not read answers 404 like one that does not exist
(the other team's engineer's column); one they may read but not change
answers 403.

A route missing from EXPECTED fails test_every_route_has_an_expected_answer,
so no endpoint ships without its permission check being written down here.

Writes carry an empty body and run in a rolled-back savepoint: an allowed
caller typically gets 400 (the input is missing) where a refused one gets
401/403 - the check under test is who gets past the door, not what they
send. The anonymous caller of a page is redirected to sign in (302)."""

import re
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import transaction
from django.test import Client

from governance import services as review_services
from governance.accounts import token_create
from rollouts import services as rollout_services
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, UserFactory, api_client_for
from tests.explanations.reporting import make_report
from tests.governance.test_audit_coverage import all_routes, write_methods
from tests.security import corpus
from tests.security.corpus import upload_dataset
from tests.security.test_notification_routes import NOTIFICATION_EXPECTED

PERSONAS = (
    "anonymous",
    "outsider",
    "maintainer",
    "engineer",
    "viewer",
    "other_engineer",
    "team_reviewer",
    "reviewer",
    "manager",
)


pytestmark = pytest.mark.usefixtures("corpus_summary")


def staff_only(*methods: str) -> dict[str, tuple[int, ...]]:
    # The Django admin: none of the personas is staff, so each is sent to the admin's sign-in.
    return everyone(302, *methods)


def everyone(status: int, *methods: str) -> dict[str, tuple[int, ...]]:
    return {method: (status,) * len(PERSONAS) for method in methods}


# route (as in the URLconf) -> method -> answers of PERSONAS, in that order:
# (anonymous, outsider, maintainer, engineer, viewer, other_engineer, team_reviewer, reviewer, manager).
# Pages send anonymous callers to sign in (302); the API answers them 401.
# An allowed caller's 400/409 is its input or the object's state; refusals are 401/403,
# and 404 where the caller may not read the model.
EXPECTED: dict[str, dict[str, tuple[int, ...]]] = {
    "": {"GET": (302, 302, 302, 302, 302, 302, 302, 302, 302)},
    "livez": {"GET": (200, 200, 200, 200, 200, 200, 200, 200, 200)},
    "readyz": {"GET": (200, 200, 200, 200, 200, 200, 200, 200, 200)},
    "healthz": {"GET": (200, 200, 200, 200, 200, 200, 200, 200, 200)},
    "metrics": {"GET": (401, 403, 200, 200, 403, 200, 200, 200, 200)},
    "login/": {
        "GET": (200, 200, 200, 200, 200, 200, 200, 200, 200),
        "POST": (200, 200, 200, 200, 200, 200, 200, 200, 200),
        "PUT": (200, 200, 200, 200, 200, 200, 200, 200, 200),
    },
    "logout/": {
        "GET": (405, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (302, 302, 302, 302, 302, 302, 302, 302, 302),
    },
    "password/change/": {
        "GET": (302, 200, 200, 200, 200, 200, 200, 200, 200),
        "POST": (302, 200, 200, 200, 200, 200, 200, 200, 200),
        "PUT": (302, 200, 200, 200, 200, 200, 200, 200, 200),
    },
    "password/change/done/": {"GET": (302, 200, 200, 200, 200, 200, 200, 200, 200)},
    # Sign-in through the identity provider: absent (404) while none is configured.
    "oidc/authenticate/": {"GET": (404, 404, 404, 404, 404, 404, 404, 404, 404)},
    "oidc/callback/": {"GET": (404, 404, 404, 404, 404, 404, 404, 404, 404)},
    "admin/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/login/": everyone(200, "GET", "POST", "PUT"),
    "admin/logout/": staff_only("GET", "POST"),
    "admin/password_change/": staff_only("GET", "POST", "PUT"),
    "admin/password_change/done/": staff_only("GET"),
    "admin/autocomplete/": staff_only("GET"),
    "admin/jsi18n/": staff_only("GET"),
    "admin/r/<path:content_type_id>/<path:object_id>/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/group/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/group/add/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/group/<path:object_id>/history/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/group/<path:object_id>/delete/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/group/<path:object_id>/change/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/group/<path:object_id>/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/user/<id>/password/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/user/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/user/add/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/user/<path:object_id>/history/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/user/<path:object_id>/delete/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/user/<path:object_id>/change/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/auth/user/<path:object_id>/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    # The domain models' read-only pages (glassbox/readonly_admin.py).
    "admin/governance/auditevent/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/governance/auditevent/add/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/governance/auditevent/<path:object_id>/history/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/governance/auditevent/<path:object_id>/delete/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/governance/auditevent/<path:object_id>/change/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/governance/auditevent/<path:object_id>/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/registeredmodel/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/registeredmodel/add/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/registeredmodel/<path:object_id>/history/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/registeredmodel/<path:object_id>/delete/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/registeredmodel/<path:object_id>/change/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/registeredmodel/<path:object_id>/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/modelversion/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/modelversion/add/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/modelversion/<path:object_id>/history/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/modelversion/<path:object_id>/delete/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/modelversion/<path:object_id>/change/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/registry/modelversion/<path:object_id>/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/explanations/explanationreport/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/explanations/explanationreport/add/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/explanations/explanationreport/<path:object_id>/history/": staff_only(
        "GET", "DELETE", "PATCH", "POST", "PUT"
    ),
    "admin/explanations/explanationreport/<path:object_id>/delete/": staff_only(
        "GET", "DELETE", "PATCH", "POST", "PUT"
    ),
    "admin/explanations/explanationreport/<path:object_id>/change/": staff_only(
        "GET", "DELETE", "PATCH", "POST", "PUT"
    ),
    "admin/explanations/explanationreport/<path:object_id>/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/rollouts/rollout/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/rollouts/rollout/add/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/rollouts/rollout/<path:object_id>/history/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/rollouts/rollout/<path:object_id>/delete/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/rollouts/rollout/<path:object_id>/change/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/rollouts/rollout/<path:object_id>/": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "admin/^(?P<app_label>auth|governance|registry|explanations|rollouts)/$": staff_only(
        "GET", "DELETE", "PATCH", "POST", "PUT"
    ),
    "admin/(?P<url>.*)$": staff_only("GET", "DELETE", "PATCH", "POST", "PUT"),
    "api/v1/auth/token/": {
        "GET": (405, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (400, 400, 400, 400, 400, 400, 400, 400, 400),
    },
    # Your own tokens: anyone signed in (a full-access token acts as its user anyway).
    # (POST is JSON only: the table's empty multipart body is refused with 415.)
    "api/v1/auth/tokens/": {
        "GET": (401, 200, 200, 200, 200, 200, 200, 200, 200),
        "POST": (401, 415, 415, 415, 415, 415, 415, 415, 415),
    },
    "api/v1/auth/tokens/<int:pk>/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "DELETE": (401, 404, 204, 404, 404, 404, 404, 404, 404),
    },
    "api/v1/models/<str:name>/versions/<int:number>/submit/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 409, 409, 403, 404, 403, 403, 403),
    },
    "api/v1/models/<str:name>/versions/<int:number>/decisions/": {
        "GET": (401, 403, 200, 200, 200, 404, 200, 200, 200),
        "POST": (401, 403, 403, 403, 403, 404, 403, 201, 403),
    },
    "api/v1/models/<str:name>/versions/<int:number>/recertify/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 409, 409, 403, 404, 403, 403, 403),
    },
    # Without a reason: 400 for whoever may roll back.
    "api/v1/models/<str:name>/rollback/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 400, 403, 403, 404, 403, 403, 403),
    },
    "models/<str:name>/versions/<int:number>/recertify/": {
        "GET": (302, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (302, 403, 302, 302, 403, 404, 403, 403, 403),
    },
    "models/<str:name>/rollback/": {
        "GET": (405, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (302, 403, 400, 403, 403, 404, 403, 403, 403),
    },
    "api/v1/audit/events/": {"GET": (401, 403, 403, 403, 403, 403, 403, 403, 200)},
    "api/v1/models/": {
        "GET": (401, 403, 200, 200, 200, 200, 200, 200, 200),
        "POST": (401, 403, 201, 201, 403, 201, 403, 403, 403),
    },
    "api/v1/models/<str:name>/": {
        "GET": (401, 403, 200, 200, 200, 404, 200, 200, 200),
        "PATCH": (401, 403, 403, 403, 403, 404, 403, 403, 403),
    },
    # Admins only (none of the personas is one); the model's readers learn it exists.
    "api/v1/models/<str:name>/input-redaction/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "PUT": (401, 403, 403, 403, 403, 404, 403, 403, 403),
    },
    "api/v1/models/<str:name>/versions/": {
        "GET": (401, 403, 200, 200, 200, 404, 200, 200, 200),
        "POST": (401, 403, 400, 400, 403, 404, 403, 403, 403),
    },
    # The card of version 3, which is in review: 409 for its engineers, who could edit it while registered.
    "api/v1/models/<str:name>/versions/<int:number>/": {
        "GET": (401, 403, 200, 200, 200, 404, 200, 200, 200),
        "PATCH": (401, 403, 409, 409, 403, 404, 403, 403, 403),
    },
    # Admins only (no persona here is one; tests/registry/test_model_archive.py covers them).
    "api/v1/models/<str:name>/archive/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 403, 403, 403, 404, 403, 403, 403),
    },
    "api/v1/models/<str:name>/unarchive/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 403, 403, 403, 404, 403, 403, 403),
    },
    "api/v1/datasets/": {
        "GET": (401, 403, 200, 200, 200, 200, 200, 200, 200),
        "POST": (401, 403, 400, 400, 403, 400, 403, 403, 403),
    },
    "api/v1/models/<str:name>/versions/<int:number>/explanations/": {
        "GET": (401, 403, 200, 200, 200, 404, 200, 200, 200),
        "POST": (401, 403, 202, 202, 403, 404, 202, 202, 403),
    },
    "api/v1/models/<str:name>/versions/<int:number>/explanations/estimate/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 200, 200, 403, 404, 200, 200, 403),
    },
    "api/v1/explanations/<int:pk>/": {"GET": (401, 403, 200, 200, 200, 404, 200, 200, 200)},
    "api/v1/explanations/<int:pk>/cancel/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 409, 403, 403, 404, 403, 403, 403),
    },
    "api/v1/explanations/<int:pk>/export.json": {"GET": (401, 403, 200, 200, 200, 404, 200, 200, 200)},
    "api/v1/explanations/<int:pk>/export.csv": {"GET": (401, 403, 200, 200, 200, 404, 200, 200, 200)},
    "api/v1/explanations/<int:pk>/export-global.csv": {"GET": (401, 403, 200, 200, 200, 404, 200, 200, 200)},
    "api/v1/models/<str:name>/predict/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 400, 400, 403, 404, 403, 403, 403),
    },
    "api/v1/models/<str:name>/feedback/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 400, 400, 403, 404, 403, 403, 403),
    },
    "api/v1/models/<str:name>/rollouts/": {
        "GET": (401, 403, 200, 200, 200, 404, 200, 200, 200),
        "POST": (401, 403, 409, 403, 403, 404, 403, 403, 403),
    },
    "api/v1/rollouts/<int:pk>/": {"GET": (401, 403, 200, 200, 200, 404, 200, 200, 200)},
    "api/v1/rollouts/<int:pk>/analysis/": {"GET": (401, 403, 200, 200, 200, 404, 200, 200, 200)},
    "api/v1/rollouts/<int:pk>/promote/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 200, 403, 403, 404, 403, 403, 403),
    },
    "api/v1/rollouts/<int:pk>/pause/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 200, 403, 403, 404, 403, 403, 403),
    },
    "api/v1/rollouts/<int:pk>/resume/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 409, 403, 403, 404, 403, 403, 403),
    },
    "api/v1/rollouts/<int:pk>/abort/": {
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (401, 403, 200, 403, 403, 404, 403, 403, 403),
    },
    "api/schema/": {"GET": (200, 200, 200, 200, 200, 200, 200, 200, 200)},
    "api/docs/": {"GET": (200, 200, 200, 200, 200, 200, 200, 200, 200)},
    "reviews/": {"GET": (302, 403, 200, 200, 200, 200, 200, 200, 200)},
    "dashboard/": {"GET": (302, 403, 403, 403, 403, 403, 403, 403, 200)},
    "models/<str:name>/versions/<int:number>/submit/": {
        "GET": (302, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (302, 403, 302, 302, 403, 404, 403, 403, 403),
    },
    "models/<str:name>/versions/<int:number>/review/": {
        "GET": (302, 403, 200, 200, 200, 404, 200, 200, 200),
        "POST": (302, 403, 403, 403, 403, 404, 403, 302, 403),
    },
    "models/<str:name>/versions/<int:number>/dossier/": {"GET": (302, 403, 200, 200, 200, 404, 200, 200, 200)},
    "models/<str:name>/versions/<int:number>/dossier.json": {"GET": (302, 403, 200, 200, 200, 404, 200, 200, 200)},
    "audit/": {"GET": (302, 403, 403, 403, 403, 403, 403, 403, 200)},
    "audit/export.csv": {"GET": (302, 403, 403, 403, 403, 403, 403, 403, 200)},
    "audit/export.json": {"GET": (302, 403, 403, 403, 403, 403, 403, 403, 200)},
    "models/": {"GET": (302, 403, 200, 200, 200, 200, 200, 200, 200)},
    "models/<str:name>/": {"GET": (302, 403, 200, 200, 200, 404, 200, 200, 200)},
    "models/<str:name>/input-redaction/": {
        "GET": (405, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (302, 403, 403, 403, 403, 404, 403, 403, 403),
    },
    "models/<str:name>/upload/": {
        "DELETE": (302, 403, 200, 200, 403, 404, 403, 403, 403),
        "GET": (302, 403, 200, 200, 403, 404, 403, 403, 403),
        "PATCH": (302, 403, 200, 200, 403, 404, 403, 403, 403),
        "POST": (302, 403, 400, 400, 403, 404, 403, 403, 403),
        "PUT": (302, 403, 200, 200, 403, 404, 403, 403, 403),
    },
    "models/<str:name>/versions/<int:number>/": {"GET": (302, 403, 200, 200, 200, 404, 200, 200, 200)},
    "datasets/": {"GET": (302, 403, 200, 200, 200, 200, 200, 200, 200)},
    "datasets/<int:pk>/": {"GET": (302, 403, 200, 200, 200, 200, 200, 200, 200)},
    "models/<str:name>/versions/<int:number>/explanations/new/": {
        "GET": (302, 403, 200, 200, 403, 404, 200, 200, 403),
        "POST": (302, 403, 302, 302, 403, 404, 302, 302, 403),
    },
    "explanations/<int:pk>/": {"GET": (302, 403, 200, 200, 200, 404, 200, 200, 200)},
    "explanations/<int:pk>/cancel/": {
        "GET": (405, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (302, 403, 302, 403, 403, 404, 403, 403, 403),
    },
    "models/<str:name>/explanations/compare/": {"GET": (302, 403, 200, 200, 200, 404, 200, 200, 200)},
    "models/<str:name>/rollouts/": {
        "GET": (302, 403, 200, 200, 200, 404, 200, 200, 200),
        "POST": (302, 403, 400, 403, 403, 404, 403, 403, 403),
    },
    "models/<str:name>/monitoring/": {"GET": (302, 403, 200, 200, 200, 404, 200, 200, 200)},
    "rollouts/<int:pk>/": {"GET": (302, 403, 200, 200, 200, 404, 200, 200, 200)},
    "rollouts/<int:pk>/<str:action>/": {
        "GET": (405, 405, 405, 405, 405, 405, 405, 405, 405),
        "POST": (302, 403, 400, 403, 403, 404, 403, 403, 403),
    },
    "api/v1/teams/": {
        "GET": (401, 403, 200, 200, 200, 200, 200, 200, 200),
        "POST": (401, 403, 403, 403, 403, 403, 403, 403, 403),
    },
    "api/v1/teams/<str:name>/": {"GET": (401, 403, 200, 200, 200, 404, 200, 404, 200)},
    "api/v1/teams/<str:name>/members/": {
        "GET": (401, 403, 200, 200, 200, 404, 200, 404, 200),
        "POST": (401, 403, 201, 403, 403, 404, 403, 404, 403),
    },
    "api/v1/teams/<str:name>/members/<str:username>/": {
        "DELETE": (401, 403, 204, 403, 403, 404, 403, 404, 403),
        "GET": (401, 405, 405, 405, 405, 405, 405, 405, 405),
    },
}

# Every route's rows: this table and those kept in their own module.
ALL_EXPECTED = {**EXPECTED, **NOTIFICATION_EXPECTED}


class World:
    """One model, `zh-sentiment`, owned by team `default`; every persona of
    PERSONAS stands in its own relation to it."""

    def __init__(self):
        self.users = {
            "anonymous": None,
            "outsider": UserFactory(username="olga"),
            # Global engineers join `default` as maintainers (tests/conftest.py, like the migration).
            "maintainer": UserFactory(username="erin", role="engineer"),
            "engineer": UserFactory(username="eve", role="engineer", team=("default", "engineer")),
            "viewer": UserFactory(username="vic", team=("default", "viewer")),
            "other_engineer": UserFactory(username="otto", role="engineer", team=("payments", "engineer")),
            "team_reviewer": UserFactory(username="tara", role="reviewer", team=("default", "viewer")),
            "reviewer": UserFactory(username="rita", role="reviewer"),
            "manager": UserFactory(username="max", role="manager"),
        }
        engineer, reviewer = self.users["maintainer"], self.users["reviewer"]
        model = RegisteredModelFactory(name="zh-sentiment", created_by=engineer)
        stable = ModelVersionFactory(model=model, created_by=engineer)
        candidate = ModelVersionFactory(model=model, created_by=engineer)
        for version in (stable, candidate):
            review_services.review_submit(actor=engineer, version=version)
            review_services.decision_record(actor=reviewer, version=version, decision="approve", comment="ok")
        rollout_services.rollout_start(actor=engineer, model=model, candidate=stable)
        self.rollout = rollout_services.rollout_start(actor=engineer, model=model, candidate=candidate)
        # Version 3 waits in review: the submit, review and decision routes name it.
        self.in_review = ModelVersionFactory(model=model, created_by=engineer)
        review_services.review_submit(actor=engineer, version=self.in_review)
        self.report = make_report(version=candidate, requested_by=engineer)
        response = upload_dataset(engineer, "holdout", "text,label\n很好,positive\n很差,negative\n".encode())
        assert response.status_code == 201, response.content
        self.dataset_id = response.json()["id"]
        self.group = Group.objects.get(name="engineer")
        self.token = token_create(actor=engineer, name="ci")[0]

    def path_of(self, route) -> str:
        values = {
            "name": "zh-sentiment",
            "number": self.in_review.number,
            "action": "pause",
            "app_label": "auth",
            "url": "nothing-here/",
            "id": self.users["maintainer"].pk,
            "username": "vic",
        }
        if route.route.startswith("api/v1/teams/"):
            values["name"] = "default"
        if route.route.startswith("api/v1/auth/tokens/"):
            values["pk"] = self.token.pk  # the maintainer's
        elif route.route.startswith(("api/v1/explanations/", "explanations/")):
            values["pk"] = self.report.pk
        elif route.route.startswith(("api/v1/rollouts/", "rollouts/")):
            values["pk"] = self.rollout.pk
        else:
            values["pk"] = self.dataset_id
        # Users; the admin's view-on-site link names a group.
        values["object_id"] = (
            self.group.pk
            if "/group/" in route.route or "content_type_id" in route.route
            else self.users["maintainer"].pk
        )
        values["content_type_id"] = ContentType.objects.get_for_model(Group).pk
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(values[m.group(1)]), route.route)  # re_path()
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), path)  # path()
        return "/" + path.replace("^", "").replace("$", "")

    def body_for(self, route_key: str) -> dict:
        """A well-formed body where the route checks its input before who
        sends it, so that the answer shows the permission check."""
        return {
            "api/v1/models/": {"name": "fresh", "risk_tier": "low"},
            "api/v1/models/<str:name>/": {"team": "payments"},
            "api/v1/models/<str:name>/versions/<int:number>/": {"description": "better words"},
            "api/v1/teams/": {"name": "fresh-team"},
            "api/v1/teams/<str:name>/members/": {"username": "olga", "role": "viewer"},
            "api/v1/models/<str:name>/versions/<int:number>/decisions/": {"decision": "approve", "comment": "ok"},
            "api/v1/models/<str:name>/versions/<int:number>/explanations/": {"method": "lime", "texts": ["很好"]},
            "api/v1/models/<str:name>/versions/<int:number>/explanations/estimate/": {
                "method": "lime",
                "texts": ["很好"],
            },
            "api/v1/models/<str:name>/rollouts/": {"candidate": self.in_review.number},
            "models/<str:name>/versions/<int:number>/review/": {"decision": "approve", "comment": "ok"},
            "models/<str:name>/versions/<int:number>/explanations/new/": {"method": "lime", "texts": "很好"},
            "models/<str:name>/rollouts/": {"candidate": self.in_review.pk, "steps_preset": "default"},
        }.get(route_key, {})

    def call(self, persona: str, method: str, route_key: str, path: str) -> int:
        user = self.users[persona]
        # Every call starts with no sign-in failures counted: the sign-in
        # limit (tests/governance/test_signin_limits.py) would otherwise
        # answer the later personas' empty sign-in forms 429.
        cache.clear()
        body = self.body_for(route_key) if method != "GET" else {}
        if path.startswith("/api/"):
            client = api_client_for(user)
            client.raise_request_exception = False
            send = getattr(client, method.lower())
            with transaction.atomic():
                # Uploads read multipart only; an empty multipart body is empty input to every view.
                kind = "json" if body else "multipart"
                status = send(path, body, format=kind).status_code if method != "GET" else send(path).status_code
                transaction.set_rollback(True)
            return status
        client = Client(raise_request_exception=False)
        if user is not None:
            client.force_login(user)
        with transaction.atomic():
            if method == "GET":
                status = client.get(path).status_code
            else:
                status = client.generic(
                    method, path, urlencode(body, doseq=True), content_type="application/x-www-form-urlencoded"
                ).status_code
            transaction.set_rollback(True)
        return status


def _methods(route) -> list[str]:
    return ["GET", *sorted(write_methods(route))]


def _routes() -> dict:
    return {route.route: route for route in all_routes()}


def test_every_route_has_an_expected_answer(db):
    missing = []
    for key, route in _routes().items():
        for method in _methods(route):
            if method not in ALL_EXPECTED.get(key, {}):
                missing.append(f"{method} {key}")
    stale = sorted(set(ALL_EXPECTED) - set(_routes()))
    assert not missing, "routes without an expected answer per persona (add them to EXPECTED):\n" + "\n".join(missing)
    assert not stale, f"EXPECTED names routes that are gone: {stale}"


def test_every_route_answers_each_persona_as_expected(db):
    """One world for the whole table (building it per route cost most of
    this module's minutes): every call runs in a transaction that is rolled
    back, so each route meets the same world. Every mismatch is listed."""
    world = World()
    routes = _routes()
    wrong = []
    for route_key in sorted(EXPECTED):
        route = routes[route_key]
        path = world.path_of(route)
        observed = {
            method: tuple(world.call(persona, method, route.route, path) for persona in PERSONAS)
            for method in _methods(route)
        }
        if route_key not in PUBLIC:
            for answers in observed.values():
                for status in answers[: 1 if route_key in OWN_ACCOUNT else 2]:  # anonymous, outsider
                    corpus.tally("call without a role (route x method)", accepted=status not in (302, 401, 403, 405))
        if observed != EXPECTED[route_key]:
            wrong.append(f"{route_key} ({path}): observed {observed}, expected {EXPECTED[route_key]}")
        if any(status >= 500 for answers in observed.values() for status in answers):
            wrong.append(f"{route_key} ({path}): a 5xx in {observed}")
    assert not wrong, "\n".join(wrong)


# Open to anyone: signing in, liveness, and the API's own description.
PUBLIC = {
    "livez",
    "readyz",
    "healthz",
    "login/",
    "admin/login/",
    "api/v1/auth/token/",
    "api/schema/",
    "api/docs/",
    "oidc/authenticate/",
    "oidc/callback/",
}
# One's own account, open to every signed-in user, role or not: its API
# tokens (which never reach further than their user) and its password.
OWN_ACCOUNT = {"api/v1/auth/tokens/", "api/v1/auth/tokens/<int:pk>/", "password/change/", "password/change/done/"}


def test_no_role_means_no_way_in():
    """Read off the table: outside PUBLIC, neither anonymous nor a signed-in
    user without a role gets anything but a refusal or a redirect to sign in."""
    leaks = [
        f"{method} {route}: {who} gets {answers[index]}"
        for route, methods in ALL_EXPECTED.items()
        if route not in PUBLIC
        for method, answers in methods.items()
        for index, who in enumerate(PERSONAS[: 1 if route in OWN_ACCOUNT else 2])
        if answers[index] not in (302, 401, 403, 405)
    ]
    assert not leaks, leaks


# Routes that name the owning team's model, or an object of it (a report, a rollout), or the team.
NAMES_THE_MODEL = re.compile(
    r"^(api/v1/)?(models/<str:name>/|explanations/<int:pk>|rollouts/<int:pk>|teams/<str:name>/)"
)


def test_another_teams_model_is_never_revealed():
    """Read off the table: the other team's engineer gets 404 (or 405 for a
    method the route never takes) on everything that names the model, and a
    viewer of the owning team never gets past a door that changes it."""
    other, viewer = PERSONAS.index("other_engineer"), PERSONAS.index("viewer")
    named = [route for route in EXPECTED if NAMES_THE_MODEL.match(route)]
    assert len(named) > 30
    leaks = [
        f"{method} {route}: {answers[other]}"
        for route in named
        for method, answers in EXPECTED[route].items()
        if answers[other] not in (404, 405)
    ]
    assert not leaks, leaks
    viewer_writes = [
        f"{method} {route}: {answers[viewer]}"
        for route in named
        for method, answers in EXPECTED[route].items()
        if method != "GET" and answers[viewer] not in (403, 405)
    ]
    assert not viewer_writes, viewer_writes
