"""CSRF on every form: each page route that takes POST (found by walking the
URLconf, API routes aside - they authenticate by token, and DRF enforces
CSRF on its session-authenticated calls) refuses a POST without the token
with 403 before the view runs, and accepts the token the page hands out."""

import pytest
from django.contrib.auth.models import User

from governance.models import AuditEvent
from tests.conftest import page_client_for
from tests.governance.test_audit_coverage import all_routes, write_methods
from tests.security import corpus
from tests.security.test_route_permissions import ALL_EXPECTED, World

pytestmark = pytest.mark.usefixtures("corpus_summary")


def _form_routes() -> list:
    """Walked at run time (finding the methods a function view takes needs the database)."""
    return sorted(
        (route for route in all_routes() if not route.route.startswith("api/") and "POST" in write_methods(route)),
        key=lambda route: route.route,
    )


# Known at collection time from the permission table, which
# test_route_permissions keeps complete for every route and method.
FORM_ROUTES = sorted(
    route for route, methods in ALL_EXPECTED.items() if not route.startswith("api/") and "POST" in methods
)


def test_the_table_lists_every_form_the_walk_finds(db):
    assert [route.route for route in _form_routes()] == FORM_ROUTES
    assert {
        "login/",
        "logout/",
        "models/<str:name>/upload/",
        "models/<str:name>/versions/<int:number>/review/",
        "models/<str:name>/rollouts/",
        "rollouts/<int:pk>/<str:action>/",
        "admin/auth/user/add/",
    } <= set(FORM_ROUTES)


@pytest.mark.parametrize("route_key", FORM_ROUTES)
def test_form_post_without_csrf_token_is_refused(db, route_key):
    world = World()
    root = User.objects.create_superuser("root", "root@example.test", "correct horse battery staple")
    route = next(route for route in _form_routes() if route.route == route_key)
    path = world.path_of(route)
    form = world.body_for(route_key)

    client = page_client_for(root, enforce_csrf=True)
    events_before = AuditEvent.objects.count()
    refused = client.post(path, form)

    corpus.tally("form POST without CSRF token", accepted=refused.status_code != 403)
    assert refused.status_code == 403, (path, refused.status_code)
    assert b"CSRF verification failed" in refused.content
    assert AuditEvent.objects.count() == events_before  # the view never ran

    # The same POST with the token the site hands out gets past the check.
    assert client.get("/models/zh-sentiment/upload/").status_code == 200  # a page with a form sets the cookie
    token = client.cookies["csrftoken"].value
    passed = client.post(path, {**form, "csrfmiddlewaretoken": token})
    assert b"CSRF verification failed" not in passed.content, path
