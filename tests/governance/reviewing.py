"""Helpers the review-workflow tests share: versions of a given risk tier,
submitting them, and deciding over the REST API."""

from django.contrib.auth.models import Group

from governance import services
from governance.models import AuditEvent, ReviewRequest
from registry.models import ModelVersion
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, api_client_for


def new_version(*, uploader, risk_tier: str = "low", name: str | None = None) -> ModelVersion:
    model_kwargs = {"risk_tier": risk_tier, "created_by": uploader}
    if name:
        model_kwargs["name"] = name
    return ModelVersionFactory(model=RegisteredModelFactory(**model_kwargs), created_by=uploader)


def submitted_version(*, uploader, risk_tier: str = "low", name: str | None = None) -> ModelVersion:
    version = new_version(uploader=uploader, risk_tier=risk_tier, name=name)
    services.review_submit(actor=uploader, version=version)
    version.refresh_from_db()
    return version


def version_path(version: ModelVersion, suffix: str = "") -> str:
    return f"/api/v1/models/{version.model.name}/versions/{version.number}/{suffix}"


def decide(user, version: ModelVersion, decision: str, comment: str = ""):
    return api_client_for(user).post(
        version_path(version, "decisions/"), {"decision": decision, "comment": comment}, format="json"
    )


def give_role(user, role: str):
    """Add a role and return a fresh copy of the user (permissions are cached per instance)."""
    user.groups.add(Group.objects.get(name=role))
    return type(user).objects.get(pk=user.pk)


def actions(**filters) -> list[tuple[str, str]]:
    """(action, outcome) of the audit events so far, oldest first."""
    return list(AuditEvent.objects.filter(**filters).order_by("id").values_list("action", "outcome"))


def open_review(version: ModelVersion) -> ReviewRequest:
    return ReviewRequest.objects.get(version=version, status=ReviewRequest.Status.OPEN)
