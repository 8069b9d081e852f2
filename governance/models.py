from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """One row per thing that happened, appended in the same transaction as the
    change it records. The database refuses UPDATE, DELETE and TRUNCATE on this
    table (see the migration), and each row's `hash` covers its content and the
    previous row's hash, so a rewrite shows up in `manage.py audit_verify`."""

    class Outcome(models.TextChoices):
        OK = "ok", "ok"
        DENIED = "denied", "denied"

    created_at = models.DateTimeField(db_index=True)
    # No foreign-key constraint: a row here must outlive any user and can
    # never be touched by an ON DELETE action.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.OK)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_label = models.CharField(max_length=300, blank=True)
    # Denormalised so the trail can be filtered by model and version cheaply.
    model_name = models.CharField(max_length=100, blank=True)
    version_number = models.IntegerField(null=True, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["actor", "id"], name="audit_actor_id"),
            models.Index(fields=["action", "id"], name="audit_action_id"),
            models.Index(fields=["model_name", "version_number", "id"], name="audit_model_version_id"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.actor_username or 'system'} {self.action} {self.object_label}"


class AuditCheckpoint(models.Model):
    """A signed statement of the chain's head at a moment (`manage.py
    audit_checkpoint`). The copy that counts is the one kept outside the
    database; this row is the platform's own record of having made it."""

    event_id = models.BigIntegerField()
    event_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    signature = models.CharField(max_length=64)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"checkpoint at event #{self.event_id}"
