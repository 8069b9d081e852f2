import json
from datetime import date, timedelta

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse

from glassbox.errors import Conflict, GlassboxError, NotPermitted

# Lowercase slugs only: names appear in URLs, storage keys and audit rows.
model_name_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?$",
    "Use 1-100 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit.",
)


class RegisteredModel(models.Model):
    class Task(models.TextChoices):
        TEXT_CLASSIFICATION = "text-classification", "text classification"

    class RiskTier(models.TextChoices):
        LOW = "low", "low"
        MEDIUM = "medium", "medium"
        HIGH = "high", "high"

    name = models.CharField(max_length=100, unique=True, validators=[model_name_validator])
    task = models.CharField(max_length=40, choices=Task.choices, default=Task.TEXT_CLASSIFICATION)
    risk_tier = models.CharField(max_length=10, choices=RiskTier.choices)
    description = models.TextField(blank=True, max_length=10_000)
    # The team that owns the model: its members' roles say who may do what
    # with it (governance/access.py). Moving it is an admin's audited act.
    team = models.ForeignKey("governance.Team", on_delete=models.PROTECT, related_name="models")
    # Personal data in prediction inputs is redacted before the log stores
    # them (rollouts/redaction.py); turning it off is an admin's audited act.
    redact_inputs = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Set while archived: the model serves nothing and takes no new versions,
    # reviews or rollouts; its history stays readable (an admin's audited act).
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("registry:model-detail", kwargs={"name": self.name})

    def audit_scope(self) -> tuple[str, None]:
        return self.name, None

    def access_of(self, user):
        """What `user` may do with this model (one answer for every app)."""
        from governance.access import model_access

        return model_access(user, self)

    def can_be_viewed_by(self, user) -> bool:
        return self.access_of(user).read

    def can_receive_version_from(self, user) -> bool:
        return self.access_of(user).develop

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    def archived_refusal(self, doing: str) -> GlassboxError | None:
        """The refusal of `doing` (e.g. "take new versions") while archived, or None."""
        if self.archived_at is None:
            return None
        return Conflict(
            f"{self.name} is archived and does not {doing}; an admin may unarchive it.", code="model_archived"
        )


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        REGISTERED = "registered", "registered"
        IN_REVIEW = "in_review", "in review"
        APPROVED = "approved", "approved"
        REJECTED = "rejected", "rejected"
        DEPLOYED = "deployed", "deployed"
        RETIRED = "retired", "retired"

    class Flavor(models.TextChoices):
        TRANSFORMERS = "transformers", "transformers"
        SKLEARN = "sklearn", "scikit-learn (skops)"

    class InferenceBackend(models.TextChoices):
        UNCHECKED = "", "not checked"
        TORCH = "torch", "torch"
        ONNX = "onnx", "ONNX Runtime"

    # The lifecycle, in one place: status -> statuses it may move to.
    ALLOWED_TRANSITIONS: dict[str, set[str]] = {
        Status.REGISTERED: {Status.IN_REVIEW},
        Status.IN_REVIEW: {Status.APPROVED, Status.REJECTED},
        Status.APPROVED: {Status.DEPLOYED, Status.RETIRED},
        # Back to approved: a rollback took it out of service (it may roll out again).
        Status.DEPLOYED: {Status.RETIRED, Status.APPROVED},
        Status.REJECTED: set(),
        Status.RETIRED: set(),
    }

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REGISTERED)
    flavor = models.CharField(max_length=16, choices=Flavor.choices)
    description = models.TextField(blank=True, max_length=10_000)
    # Model card.
    intended_use = models.TextField(blank=True, max_length=10_000)
    limitations = models.TextField(blank=True, max_length=10_000)
    training_data = models.TextField(blank=True, max_length=10_000)
    evaluation_data = models.TextField(blank=True, max_length=10_000)
    metrics = models.JSONField(default=dict, blank=True)
    # What the artifact turned out to be when it was checked and loaded.
    labels = models.JSONField(default=list)
    max_length = models.PositiveIntegerField(null=True, blank=True)
    # Immutable artifact: stored under its SHA-256.
    artifact_sha256 = models.CharField(max_length=64, db_index=True)
    artifact_size = models.BigIntegerField()
    artifact_filename = models.CharField(max_length=255)
    artifact_key = models.CharField(max_length=255)
    artifact_format = models.CharField(max_length=16)
    files = models.JSONField(default=list)
    # For an MLflow model directory: what its MLmodel file said (signature,
    # run id, saved time, MLflow version, model uuid, metadata); else empty.
    mlflow_model = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Set on approval from the risk tier's policy: periodic review is due by then.
    recertify_by = models.DateField(null=True, blank=True, db_index=True)
    # What runs a transformers version, decided by the warm task's export and
    # agreement check (registry/onnx_export.py), and why.
    inference_backend = models.CharField(max_length=8, choices=InferenceBackend.choices, blank=True, default="")
    inference_backend_reason = models.TextField(blank=True, max_length=1000)

    class Meta:
        ordering = ["model", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="unique_version_number_per_model"),
        ]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.number}"

    def get_absolute_url(self) -> str:
        return reverse("registry:version-detail", kwargs={"name": self.model.name, "number": self.number})

    def audit_scope(self) -> tuple[str, int]:
        return self.model.name, self.number

    def can_move_to(self, status: str) -> bool:
        return status in self.ALLOWED_TRANSITIONS[self.status]

    def submission_refusal(self, user) -> GlassboxError | None:
        """Why `user` may not submit this version for review now, or None.
        Any engineer of the owning team may submit (the uploader included)."""
        if not self.model.access_of(user).develop:
            return NotPermitted("Only engineers may submit versions for review.")
        if not self.can_move_to(self.Status.IN_REVIEW):
            return Conflict(
                f"{self} is {self.status}; only a registered version can be submitted for review.",
                current_status=self.status,
            )
        return None

    def can_be_submitted_by(self, user) -> bool:
        return self.submission_refusal(user) is None

    def certification_lapsed_since(self, today: date) -> date | None:
        """The first day this approved or deployed version was past its
        re-certification date (`recertify_by` is the last good day), or None."""
        if self.status not in (self.Status.APPROVED, self.Status.DEPLOYED) or self.recertify_by is None:
            return None
        return self.recertify_by + timedelta(days=1) if self.recertify_by < today else None

    def mlflow_signature_rows(self) -> dict[str, list[dict]]:
        """The MLflow signature's inputs / outputs / params as table rows
        (name, type, required), for the version page."""
        signature = (self.mlflow_model or {}).get("signature") or {}
        rows = {}
        for part, specs in signature.items():
            if isinstance(specs, list):
                rows[part] = [
                    {
                        "name": spec.get("name", "—"),
                        "type": spec.get("type", "—"),
                        "detail": json.dumps(spec.get("tensor-spec") or spec.get("default") or "", ensure_ascii=False)
                        if spec.get("tensor-spec") or spec.get("default") is not None
                        else "",
                        "required": spec.get("required", True),
                    }
                    for spec in specs
                    if isinstance(spec, dict)
                ]
            else:
                rows[part] = [{"name": "—", "type": str(specs)[:500], "detail": "", "required": True}]
        return rows

    def mlflow_metadata_text(self) -> str:
        metadata = (self.mlflow_model or {}).get("metadata")
        return json.dumps(metadata, indent=2, ensure_ascii=False) if metadata else ""

    @property
    def card(self) -> dict[str, str]:
        return {
            "description": self.description,
            "intended_use": self.intended_use,
            "limitations": self.limitations,
            "training_data": self.training_data,
            "evaluation_data": self.evaluation_data,
        }


# What an upload's `flavor` may say: a flavor, or "mlflow" for an MLflow model
# directory whose MLmodel file names it (registry/mlflow_models.py).
UPLOAD_FLAVOR_CHOICES = [*ModelVersion.Flavor.choices, ("mlflow", "MLflow model (flavor read from MLmodel)")]


class Dataset(models.Model):
    """An evaluation set: texts with their true labels, stored as uploaded
    (under its SHA-256) after every row was parsed and checked."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSONL = "jsonl", "JSON lines"

    name = models.CharField(max_length=100, validators=[model_name_validator])
    description = models.TextField(blank=True, max_length=10_000)
    format = models.CharField(max_length=8, choices=Format.choices)
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField()
    row_count = models.PositiveIntegerField()
    labels = models.JSONField(default=list)
    storage_key = models.CharField(max_length=255)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"

    def get_absolute_url(self) -> str:
        return reverse("registry:dataset-detail", kwargs={"pk": self.pk})

    def audit_scope(self) -> tuple[str, None]:
        return "", None
