"""Every route that can write is in WRITE_ROUTES, with a way to exercise it
successfully, and each successful write leaves an audit event with the
right action. test_every_write_route_is_in_the_table walks the whole
URLconf: a new write route fails it until it is added here - so no endpoint
ships without an audit check - or exempted with a reason.

What counts as a write route: a class-based view (DRF or Django) that
implements post/put/patch/delete; a function view that does not answer a
write with 405 (read-only pages are decorated with require_safe/require_GET
and so drop out by themselves)."""

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.db import transaction
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import IntConverter

from governance import services as review_services
from governance.audit_integrity import verify_chain
from governance.models import AuditEvent
from tests.conftest import (
    ModelVersionFactory,
    RegisteredModelFactory,
    UserFactory,
    api_client_for,
    page_client_for,
    team_member,
    team_named,
)

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different horse, battery staple 42"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


# --- finding the write routes ----------------------------------------------------------


@dataclass(frozen=True)
class Route:
    route: str
    name: str
    callback: Callable
    sample_kwargs: dict


def _sample_kwargs(pattern) -> dict:
    converters = getattr(pattern, "converters", None)
    if converters is not None:  # path()
        return {key: 0 if isinstance(conv, IntConverter) else "zz0" for key, conv in converters.items()}
    return {key: "zz0" for key in pattern.regex.groupindex}  # re_path()


def all_routes(
    resolver: URLResolver | None = None, prefix: str = "", namespace: str = "", kwargs=None
) -> Iterator[Route]:
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        here = {**(kwargs or {}), **_sample_kwargs(entry.pattern)}
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = ":".join(part for part in (namespace, entry.namespace) if part)
            yield from all_routes(entry, route, inner, here)
        elif isinstance(entry, URLPattern):
            name = f"{namespace}:{entry.name}" if namespace and entry.name else (entry.name or "")
            yield Route(route, name, entry.callback, here)


def _probe_user() -> User:
    user, _ = User.objects.get_or_create(username="route-prober", defaults={"is_staff": True, "is_superuser": True})
    return user


def write_methods(route: Route) -> set[str]:
    """The write methods a route accepts: declared by a class-based view, or
    not refused with 405 by a function view asked as a superuser (inside a
    rolled-back transaction, with sample arguments that name nothing)."""
    view_class = getattr(route.callback, "view_class", None)
    if view_class is not None:
        return {
            m for m in WRITE_METHODS if m.lower() in view_class.http_method_names and hasattr(view_class, m.lower())
        }
    accepted = set()
    for method in WRITE_METHODS:
        request = RequestFactory().generic(method, "/" + re.sub(r"[<>^$()?:|]", "", route.route))
        request.user = _probe_user()
        request.session = SessionStore()
        request._messages = FallbackStorage(request)
        request._dont_enforce_csrf_checks = True
        try:
            with transaction.atomic():
                status = route.callback(request, **route.sample_kwargs).status_code
                transaction.set_rollback(True)
        except Exception:  # a 404 or any refusal that is not 405: the route takes writes
            status = None
        if status != 405:
            accepted.add(method)
    return accepted


# --- how to exercise each write ------------------------------------------------------------


class World:
    """Personas and helpers for the exercises."""

    def __init__(self, request: pytest.FixtureRequest):
        self.request = request
        self.engineer = UserFactory(username="erin", role="engineer")
        self.reviewer = UserFactory(username="rita", role="reviewer")
        self.root = UserFactory(username="root", is_staff=True, is_superuser=True)

    def api_for(self, user):
        return api_client_for(user)

    def version(self, *, submitted: bool = False):
        model = RegisteredModelFactory(created_by=self.engineer)
        version = ModelVersionFactory(model=model, created_by=self.engineer)
        if submitted:
            review_services.review_submit(actor=self.engineer, version=version)
        return version

    def uploaded_version(self):
        """A version with a real artifact (an explanation needs to load it)."""
        demo = self.request.getfixturevalue("demo_models")
        model = RegisteredModelFactory(created_by=self.engineer)
        with open(demo["sklearn_skops"], "rb") as artifact:
            response = self.api_for(self.engineer).post(
                f"/api/v1/models/{model.name}/versions/",
                {"artifact": artifact, "flavor": "sklearn"},
                format="multipart",
            )
        assert response.status_code == 201, response.content
        return model.versions.get()

    def explanation(self):
        version = self.uploaded_version()
        response = self.api_for(self.engineer).post(
            f"/api/v1/models/{version.model.name}/versions/{version.number}/explanations/",
            {"method": "lime", "texts": ["质量很好，非常满意"]},
            format="json",
        )
        assert response.status_code == 202, response.content
        return response.json()["id"]


def _version_path(version, suffix: str = "") -> str:
    return f"models/{version.model.name}/versions/{version.number}/{suffix}"


def _user_change_form(user: User, **changes) -> dict:
    joined = user.date_joined
    form = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": user.email,
        "is_active": "on",
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        "last_login_0": "",
        "last_login_1": "",
    }
    form.update(changes)
    return form


def _promote_to_manager(w) -> dict:
    return _user_change_form(w.engineer, groups=[str(Group.objects.get(name="manager").pk)])


def _dataset_csv() -> io.BytesIO:
    data = io.BytesIO("text,label\n很好,positive\n很差,negative\n".encode())
    data.name = "holdout.csv"
    return data


def _skops(w: World) -> io.BytesIO:
    demo = w.request.getfixturevalue("demo_models")
    data = io.BytesIO(demo["sklearn_skops"].read_bytes())
    data.name = "model.skops"
    return data


@dataclass(frozen=True)
class Write:
    method: str  # "*" for function views, which do not declare their methods
    exercise: Callable[[World], object]
    action: str


@dataclass(frozen=True)
class Exempt:
    method: str  # "*": every method the route accepts
    reason: str


# The exercises: each performs one successful write as a user would.


def token(w):
    return Client().post("/api/v1/auth/token/", {"username": "erin", "password": PASSWORD})


def password_change(w):
    return page_client_for(w.engineer).post(
        "/password/change/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )


def token_create(w):
    return w.api_for(w.engineer).post("/api/v1/auth/tokens/", {"name": "ci"}, format="json")


def token_revoke(w):
    client = w.api_for(w.engineer)
    created = client.post("/api/v1/auth/tokens/", {"name": "ci"}, format="json").json()
    return client.delete(f"/api/v1/auth/tokens/{created['id']}/")


def login(w, path="/login/", username="erin"):
    return Client().post(path, {"username": username, "password": PASSWORD, "next": "/"})


def logout(w, path="/logout/", user=None):
    return page_client_for(user or w.engineer).post(path)


def model_register(w):
    return w.api_for(w.engineer).post("/api/v1/models/", {"name": "fresh", "risk_tier": "low"}, format="json")


def version_upload_api(w):
    name = RegisteredModelFactory(created_by=w.engineer).name
    upload = {"artifact": _skops(w), "flavor": "sklearn"}
    return w.api_for(w.engineer).post(f"/api/v1/models/{name}/versions/", upload, format="multipart")


def version_upload_page(w):
    name = RegisteredModelFactory(created_by=w.engineer).name
    return page_client_for(w.engineer).post(f"/models/{name}/upload/", {"artifact": _skops(w), "flavor": "sklearn"})


def dataset_upload(w):
    upload = {"file": _dataset_csv(), "name": "holdout"}
    return w.api_for(w.engineer).post("/api/v1/datasets/", upload, format="multipart")


def submit_api(w):
    return w.api_for(w.engineer).post("/api/v1/" + _version_path(w.version(), "submit/"))


def submit_page(w):
    return page_client_for(w.engineer).post("/" + _version_path(w.version(), "submit/"))


def decide_api(w):
    path = "/api/v1/" + _version_path(w.version(submitted=True), "decisions/")
    return w.api_for(w.reviewer).post(
        path, {"decision": "approve", "comment": "card and metrics checked"}, format="json"
    )


def decide_page(w):
    path = "/" + _version_path(w.version(submitted=True), "review/")
    return page_client_for(w.reviewer).post(path, {"decision": "reject", "comment": "no model card"})


def recertify_api(w):
    return w.api_for(w.engineer).post("/api/v1/" + _version_path(_approved(w), "recertify/"))


def recertify_page(w):
    return page_client_for(w.engineer).post("/" + _version_path(_approved(w), "recertify/"))


def explain_api(w):
    path = "/api/v1/" + _version_path(w.uploaded_version(), "explanations/")
    return w.api_for(w.engineer).post(path, {"method": "lime", "texts": ["很好"]}, format="json")


def explain_page(w):
    path = "/" + _version_path(w.uploaded_version(), "explanations/new/")
    return page_client_for(w.engineer).post(path, {"method": "lime", "texts": "很好\n很差"})


def cancel_api(w):
    return w.api_for(w.engineer).post(f"/api/v1/explanations/{w.explanation()}/cancel/")


def cancel_page(w):
    return page_client_for(w.engineer).post(f"/explanations/{w.explanation()}/cancel/")


def team_create(w):
    return w.api_for(w.root).post("/api/v1/teams/", {"name": "payments"}, format="json")


def team_member_add(w):
    return w.api_for(w.root).post(
        "/api/v1/teams/default/members/", {"username": "rita", "role": "viewer"}, format="json"
    )


def team_member_remove(w):
    team_member(w.reviewer, "default", "viewer")
    return w.api_for(w.root).delete("/api/v1/teams/default/members/rita/")


def model_team_move(w):
    model = RegisteredModelFactory(created_by=w.engineer)
    team_named("payments")
    return w.api_for(w.root).patch(f"/api/v1/models/{model.name}/", {"team": "payments"}, format="json")


def model_input_redaction_api(w):
    model = RegisteredModelFactory(created_by=w.engineer)
    return w.api_for(w.root).put(f"/api/v1/models/{model.name}/input-redaction/", {"enabled": False}, format="json")


def model_input_redaction_page(w):
    model = RegisteredModelFactory(created_by=w.engineer)
    return page_client_for(w.root).post(f"/models/{model.name}/input-redaction/", {"enabled": "off"})


def model_describe(w):
    model = RegisteredModelFactory(created_by=w.engineer)
    return w.api_for(w.root).patch(f"/api/v1/models/{model.name}/", {"description": "说明"}, format="json")


def model_archive(w):
    model = RegisteredModelFactory(created_by=w.engineer)
    return w.api_for(w.root).post(f"/api/v1/models/{model.name}/archive/")


def model_unarchive(w):
    model = RegisteredModelFactory(created_by=w.engineer)
    w.api_for(w.root).post(f"/api/v1/models/{model.name}/archive/")
    return w.api_for(w.root).post(f"/api/v1/models/{model.name}/unarchive/")


def version_card_update(w):
    version = w.version()
    return w.api_for(w.engineer).patch(
        f"/api/v1/models/{version.model.name}/versions/{version.number}/", {"limitations": "短文本"}, format="json"
    )


def _approved(w, model=None):
    version = ModelVersionFactory(model=model or RegisteredModelFactory(created_by=w.engineer), created_by=w.engineer)
    review_services.review_submit(actor=w.engineer, version=version)
    review_services.decision_record(actor=w.reviewer, version=version, decision="approve", comment="fine")
    return version


def rollout_start_page(w):
    version = _approved(w)
    form = {"candidate": version.pk, "steps_preset": "default"}
    return page_client_for(w.engineer).post(f"/models/{version.model.name}/rollouts/", form)


def rollout_action_page(w):
    from rollouts import services as rollout_services

    stable = _approved(w)
    rollout_services.rollout_start(actor=w.engineer, model=stable.model, candidate=stable)  # first deployment
    candidate = _approved(w, stable.model)
    rollout = rollout_services.rollout_start(actor=w.engineer, model=stable.model, candidate=candidate)
    return page_client_for(w.engineer).post(f"/rollouts/{rollout.pk}/pause/", {"confirm": "on", "reason": "checking"})


def _rollout_in_progress(w):
    """v1 deployed (a first deployment), v2 rolling out: for the gates."""
    from rollouts import services as rollout_services

    stable = _approved(w)
    rollout_services.rollout_start(actor=w.engineer, model=stable.model, candidate=stable)
    candidate = _approved(w, stable.model)
    return rollout_services.rollout_start(actor=w.engineer, model=stable.model, candidate=candidate)


def rollout_start_api(w):
    version = _approved(w)
    path = f"/api/v1/models/{version.model.name}/rollouts/"
    return w.api_for(w.engineer).post(path, {"candidate": version.number}, format="json")


def rollout_gate_api(gate: str):
    def exercise(w):
        from rollouts import services as rollout_services

        rollout = _rollout_in_progress(w)
        if gate == "resume":
            rollout_services.rollout_pause(actor=w.engineer, rollout=rollout)
        return w.api_for(w.engineer).post(
            f"/api/v1/rollouts/{rollout.pk}/{gate}/", {"reason": "checked"}, format="json"
        )

    return exercise


def feedback_api(w):
    """Ground truth on a logged prediction (the log row is test data: serving
    itself is covered in tests/rollouts/test_predict_api.py)."""
    from django.utils import timezone

    from rollouts.models import PredictionLog

    version = w.version()
    logged = PredictionLog.objects.create(
        model=version.model,
        version=version,
        route="stable",
        label="positive",
        confidence=0.9,
        latency_ms=1.0,
        created_at=timezone.now(),
    )
    items = [{"prediction_id": str(logged.prediction_id), "label": "negative"}]
    response = w.api_for(w.engineer).post(
        f"/api/v1/models/{version.model.name}/feedback/", {"items": items}, format="json"
    )
    # Feedback rows are observations: the interval's summary (celery beat) audits them.
    from rollouts.services import feedback_summarize

    feedback_summarize()
    return response


def _promoted_model(w):
    """v1 deployed first, v2 promoted over it: a model that can roll back."""
    from rollouts import services as rollout_services

    rollout = _rollout_in_progress(w)
    rollout_services.rollout_promote(actor=w.engineer, rollout=rollout)
    return rollout.model


def rollback_api(w):
    model = _promoted_model(w)
    return w.api_for(w.engineer).post(f"/api/v1/models/{model.name}/rollback/", {"reason": "spike"}, format="json")


def rollback_page(w):
    model = _promoted_model(w)
    return page_client_for(w.engineer).post(f"/models/{model.name}/rollback/", {"confirm": "on", "reason": "spike"})


def admin_password_change(w):
    form = {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    return page_client_for(w.root).post("/admin/password_change/", form)


def admin_post(path_of: Callable[[World], str], form_of: Callable[[World], dict]):
    def exercise(w):
        return page_client_for(w.root).post(path_of(w), form_of(w))

    return exercise


def _group(w) -> int:
    return Group.objects.create(name="temporary").pk


def webhook_subscribe(w):
    from django.conf import settings

    settings.GLASSBOX_WEBHOOK_ALLOW_PRIVATE = True  # a loopback target: nothing is sent here
    name = RegisteredModelFactory(created_by=w.engineer).name
    body = {"url": "http://127.0.0.1:9/hook", "events": ["rollout.paused"], "model": name}
    return w.api_for(w.engineer).post("/api/v1/webhooks/", body, format="json")


def webhook_unsubscribe(w):
    created = webhook_subscribe(w).json()
    return w.api_for(w.engineer).delete(f"/api/v1/webhooks/{created['id']}/")


def notification_preferences(w):
    return page_client_for(w.reviewer).post("/account/notifications/", {"enabled": ["review_opened"]})


NEW_USER_FORM = {"username": "newbie", "usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
SET_PASSWORD_FORM = {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
READS = "only reads (answers any method like GET)"
NO_BULK_ACTIONS = "changelist: its only bulk action, delete_selected, is disabled site-wide (governance/admin.py)"
READ_ONLY_ADMIN = (
    "read-only admin page: add, change, delete and bulk actions refused for everyone, superusers too "
    "(glassbox/readonly_admin.py; tests/governance/test_admin_pages.py)"
)
REDIRECTS = "RedirectView to the change page: answers every method with a redirect"


# route (as in the URLconf) -> how each write method it accepts is exercised, or why not.
WRITE_ROUTES: dict[str, list[Write | Exempt]] = {
    # sign-in
    "api/v1/auth/token/": [Write("POST", token, "auth.token")],
    "api/v1/auth/tokens/": [Write("POST", token_create, "token.create")],
    "api/v1/auth/tokens/<int:pk>/": [Write("DELETE", token_revoke, "token.revoke")],
    "login/": [
        Write("POST", login, "auth.login"),
        Exempt("PUT", "FormView sends PUT to post(), but Django parses form bodies of POST only: no login"),
    ],
    "logout/": [Write("POST", logout, "auth.logout")],
    "password/change/": [
        Write("POST", password_change, "auth.password_change"),
        Exempt("PUT", "FormView sends PUT to post(), but Django parses form bodies of POST only: no change"),
    ],
    # registry
    "api/v1/models/": [Write("POST", model_register, "model.create")],
    "api/v1/models/<str:name>/versions/": [Write("POST", version_upload_api, "version.create")],
    "api/v1/datasets/": [Write("POST", dataset_upload, "dataset.create")],
    "api/v1/models/<str:name>/": [
        Write("PATCH", model_team_move, "model.team_move"),
        Write("PATCH", model_describe, "model.update"),
    ],
    "api/v1/models/<str:name>/archive/": [Write("POST", model_archive, "model.archive")],
    "api/v1/models/<str:name>/unarchive/": [Write("POST", model_unarchive, "model.unarchive")],
    "api/v1/models/<str:name>/versions/<int:number>/": [Write("PATCH", version_card_update, "version.card_update")],
    "api/v1/models/<str:name>/input-redaction/": [Write("PUT", model_input_redaction_api, "model.input_redaction")],
    "models/<str:name>/input-redaction/": [Write("*", model_input_redaction_page, "model.input_redaction")],
    # teams
    "api/v1/teams/": [Write("POST", team_create, "team.create")],
    "api/v1/teams/<str:name>/members/": [Write("POST", team_member_add, "team.member_add")],
    "api/v1/teams/<str:name>/members/<str:username>/": [Write("DELETE", team_member_remove, "team.member_remove")],
    "models/<str:name>/upload/": [Write("*", version_upload_page, "version.create")],
    # reviews
    "api/v1/models/<str:name>/versions/<int:number>/submit/": [Write("POST", submit_api, "version.submit")],
    "api/v1/models/<str:name>/versions/<int:number>/decisions/": [Write("POST", decide_api, "review.approve")],
    "models/<str:name>/versions/<int:number>/submit/": [Write("*", submit_page, "version.submit")],
    "models/<str:name>/versions/<int:number>/review/": [Write("*", decide_page, "review.reject")],
    "api/v1/models/<str:name>/versions/<int:number>/recertify/": [
        Write("POST", recertify_api, "version.recertify_request")
    ],
    "models/<str:name>/versions/<int:number>/recertify/": [Write("*", recertify_page, "version.recertify_request")],
    # explanations
    "api/v1/models/<str:name>/versions/<int:number>/explanations/": [Write("POST", explain_api, "explanation.request")],
    "models/<str:name>/versions/<int:number>/explanations/new/": [Write("*", explain_page, "explanation.request")],
    "api/v1/models/<str:name>/versions/<int:number>/explanations/estimate/": [
        Exempt("POST", "an estimate writes nothing; a refused one is audited like a refused request")
    ],
    "api/v1/explanations/<int:pk>/cancel/": [Write("POST", cancel_api, "explanation.cancel")],
    "explanations/<int:pk>/cancel/": [Write("*", cancel_page, "explanation.cancel")],
    # rollout pages (rollouts/views.py)
    "models/<str:name>/rollouts/": [Write("*", rollout_start_page, "rollout.start")],
    "rollouts/<int:pk>/<str:action>/": [Write("*", rollout_action_page, "rollout.pause")],
    # rollout API (rollouts/apis.py)
    "api/v1/models/<str:name>/rollouts/": [Write("POST", rollout_start_api, "rollout.start")],
    "api/v1/rollouts/<int:pk>/promote/": [Write("POST", rollout_gate_api("promote"), "rollout.promote")],
    "api/v1/rollouts/<int:pk>/pause/": [Write("POST", rollout_gate_api("pause"), "rollout.pause")],
    "api/v1/rollouts/<int:pk>/resume/": [Write("POST", rollout_gate_api("resume"), "rollout.resume")],
    "api/v1/rollouts/<int:pk>/abort/": [Write("POST", rollout_gate_api("abort"), "rollout.abort")],
    "api/v1/models/<str:name>/rollback/": [Write("POST", rollback_api, "rollout.rollback")],
    "models/<str:name>/rollback/": [Write("*", rollback_page, "rollout.rollback")],
    # notifications and webhooks (notifications/)
    "api/v1/webhooks/": [Write("POST", webhook_subscribe, "webhook.create")],
    "api/v1/webhooks/<int:pk>/": [Write("DELETE", webhook_unsubscribe, "webhook.delete")],
    "account/notifications/": [Write("*", notification_preferences, "notification.preferences")],
    # serving (data plane)
    "api/v1/models/<str:name>/predict/": [
        Exempt("POST", "data plane: every prediction is recorded in PredictionLog, not the audit trail"),
    ],
    "api/v1/models/<str:name>/feedback/": [Write("POST", feedback_api, "feedback.summary")],
    # Django admin (superusers): its LogEntry rows are mirrored into the trail (governance/admin.py)
    "admin/login/": [Write("*", lambda w: login(w, "/admin/login/", "root"), "auth.login")],
    "admin/logout/": [Write("*", lambda w: logout(w, "/admin/logout/", w.root), "auth.logout")],
    "admin/password_change/": [Write("*", admin_password_change, "auth.password_change")],
    "admin/auth/group/add/": [
        Write("*", admin_post(lambda w: "/admin/auth/group/add/", lambda w: {"name": "auditors"}), "admin.add"),
    ],
    "admin/auth/group/<path:object_id>/change/": [
        Write(
            "*",
            admin_post(lambda w: f"/admin/auth/group/{_group(w)}/change/", lambda w: {"name": "renamed"}),
            "admin.change",
        ),
    ],
    "admin/auth/group/<path:object_id>/delete/": [
        Write(
            "*",
            admin_post(lambda w: f"/admin/auth/group/{_group(w)}/delete/", lambda w: {"post": "yes"}),
            "admin.delete",
        ),
    ],
    "admin/auth/user/add/": [
        Write("*", admin_post(lambda w: "/admin/auth/user/add/", lambda w: NEW_USER_FORM), "admin.add"),
    ],
    "admin/auth/user/<path:object_id>/change/": [
        Write(
            "*", admin_post(lambda w: f"/admin/auth/user/{w.engineer.pk}/change/", _promote_to_manager), "admin.change"
        ),
    ],
    "admin/auth/user/<id>/password/": [
        Write(
            "*",
            admin_post(lambda w: f"/admin/auth/user/{w.engineer.pk}/password/", lambda w: SET_PASSWORD_FORM),
            "admin.change",
        ),
    ],
    "admin/auth/user/<path:object_id>/delete/": [
        Write(
            "*",
            admin_post(
                lambda w: f"/admin/auth/user/{UserFactory(username='leaver').pk}/delete/", lambda w: {"post": "yes"}
            ),
            "admin.delete",
        ),
    ],
    "admin/": [Exempt("*", f"admin index {READS}")],
    "admin/^(?P<app_label>auth|governance|registry|explanations|rollouts)/$": [Exempt("*", f"admin app index {READS}")],
    "admin/r/<path:content_type_id>/<path:object_id>/": [Exempt("*", "redirects to an object's page")],
    "admin/(?P<url>.*)$": [Exempt("*", "unknown admin URLs: 404 or a slash redirect")],
    "admin/auth/group/": [Exempt("*", NO_BULK_ACTIONS)],
    "admin/auth/user/": [Exempt("*", NO_BULK_ACTIONS)],
    "admin/auth/group/<path:object_id>/history/": [Exempt("*", f"history page {READS}")],
    "admin/auth/user/<path:object_id>/history/": [Exempt("*", f"history page {READS}")],
    "admin/auth/group/<path:object_id>/": [Exempt("*", REDIRECTS)],
    "admin/auth/user/<path:object_id>/": [Exempt("*", REDIRECTS)],
    # The domain models' pages: read-only for everyone (glassbox/readonly_admin.py).
    "admin/governance/auditevent/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/governance/auditevent/add/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/governance/auditevent/<path:object_id>/history/": [Exempt("*", f"history page {READS}")],
    "admin/governance/auditevent/<path:object_id>/delete/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/governance/auditevent/<path:object_id>/change/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/governance/auditevent/<path:object_id>/": [Exempt("*", REDIRECTS)],
    "admin/registry/registeredmodel/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/registry/registeredmodel/add/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/registry/registeredmodel/<path:object_id>/history/": [Exempt("*", f"history page {READS}")],
    "admin/registry/registeredmodel/<path:object_id>/delete/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/registry/registeredmodel/<path:object_id>/change/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/registry/registeredmodel/<path:object_id>/": [Exempt("*", REDIRECTS)],
    "admin/registry/modelversion/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/registry/modelversion/add/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/registry/modelversion/<path:object_id>/history/": [Exempt("*", f"history page {READS}")],
    "admin/registry/modelversion/<path:object_id>/delete/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/registry/modelversion/<path:object_id>/change/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/registry/modelversion/<path:object_id>/": [Exempt("*", REDIRECTS)],
    "admin/explanations/explanationreport/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/explanations/explanationreport/add/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/explanations/explanationreport/<path:object_id>/history/": [Exempt("*", f"history page {READS}")],
    "admin/explanations/explanationreport/<path:object_id>/delete/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/explanations/explanationreport/<path:object_id>/change/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/explanations/explanationreport/<path:object_id>/": [Exempt("*", REDIRECTS)],
    "admin/rollouts/rollout/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/rollouts/rollout/add/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/rollouts/rollout/<path:object_id>/history/": [Exempt("*", f"history page {READS}")],
    "admin/rollouts/rollout/<path:object_id>/delete/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/rollouts/rollout/<path:object_id>/change/": [Exempt("*", READ_ONLY_ADMIN)],
    "admin/rollouts/rollout/<path:object_id>/": [Exempt("*", REDIRECTS)],
}


def _covers(entries: list[Write | Exempt], method: str) -> bool:
    return any(entry.method in (method, "*") for entry in entries)


def test_every_write_route_is_in_the_table(db):
    missing, stale = [], []
    found = set()
    for route in all_routes():
        methods = write_methods(route)
        if not methods:
            continue
        found.add(route.route)
        entries = WRITE_ROUTES.get(route.route, [])
        # A function view cannot say which methods it treats as writes: one
        # exercise (or exemption) of the route is enough. A class says so
        # per method, and each method needs its own.
        declared = getattr(route.callback, "view_class", None) is not None
        for method in sorted(methods) if declared else ["*"]:
            if not (_covers(entries, method) if declared else entries):
                missing.append(f"{method} {route.route} ({route.name or route.callback})")
    stale = sorted(set(WRITE_ROUTES) - found)
    assert not missing, "write routes without an audit exercise (add them to WRITE_ROUTES):\n" + "\n".join(missing)
    assert not stale, f"WRITE_ROUTES names routes that no longer take writes: {stale}"


def test_read_only_pages_refuse_writes(db):
    # The ones that are not in the table because they answer 405.
    read_only = {r.route for r in all_routes() if not write_methods(r)}
    pages = (
        "",
        "models/",
        "models/<str:name>/",
        "datasets/",
        "audit/",
        "audit/export.csv",
        "livez",
        "readyz",
        "healthz",
    )
    for route in (*pages, "api/v1/audit/events/"):
        assert route in read_only, route


@pytest.mark.parametrize(
    "route, write",
    [(route, entry) for route, entries in WRITE_ROUTES.items() for entry in entries if isinstance(entry, Write)],
    ids=lambda value: value if isinstance(value, str) else value.action,
)
def test_each_write_records_its_event(db, request, route, write):
    world = World(request)
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    response = write.exercise(world)

    assert response.status_code < 400, (route, response.status_code, getattr(response, "content", b"")[:2000])
    new = AuditEvent.objects.filter(id__gt=before)
    assert new.filter(action=write.action, outcome="ok").exists(), (route, list(new.values_list("action", "outcome")))
    assert verify_chain()[1] is None


# --- what the admin mirror records, and does not ------------------------------------------


def test_admin_bulk_delete_is_not_offered(db, request):
    world = World(request)
    Group.objects.create(name="keep")
    selected = [group.pk for group in Group.objects.all()]
    response = page_client_for(world.root).post(
        "/admin/auth/group/", {"action": "delete_selected", "_selected_action": selected, "post": "yes"}
    )
    assert response.status_code in (200, 302)
    assert Group.objects.filter(name="keep").exists()


def test_role_change_in_the_admin_names_who_did_it(db, request):
    world = World(request)
    page_client_for(world.root).post(f"/admin/auth/user/{world.engineer.pk}/change/", _promote_to_manager(world))
    event = AuditEvent.objects.get(action="admin.change")
    assert (event.actor_username, event.object_type, event.object_label) == ("root", "auth.user", "erin")
    assert "Groups" in event.detail["change_message"]


def test_password_change_in_the_admin_names_who_did_it(db, request):
    world = World(request)
    page_client_for(world.root).post(f"/admin/auth/user/{world.engineer.pk}/password/", SET_PASSWORD_FORM)
    change = AuditEvent.objects.get(action="auth.password_change")
    assert (change.actor_username, change.object_label) == ("root", "erin")


def test_failed_logins_are_recorded_without_the_password(db, request):
    World(request)
    Client().post("/login/", {"username": "erin", "password": "guess-1"})
    api_client_for(None).post("/api/v1/auth/token/", {"username": "nobody", "password": "guess-2"})

    failed = AuditEvent.objects.filter(action="auth.login", outcome="denied").order_by("id")
    assert [(e.detail["username"], e.detail["path"], e.actor_id) for e in failed] == [
        ("erin", "/login/", None),
        ("nobody", "/api/v1/auth/token/", None),
    ]
    assert not any("guess" in str(values) for values in AuditEvent.objects.values_list())
