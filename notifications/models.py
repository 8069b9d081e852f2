from django.conf import settings
from django.db import models
from django.db.models import Q


class NotificationKind(models.TextChoices):
    """What a person may be e-mailed about; each can be turned off on the
    profile page (NotificationPreference)."""

    REVIEW_OPENED = "review_opened", "a version is submitted for review (reviewers)"
    REVIEW_DECIDED = "review_decided", "a reviewer decides on a version you submitted"
    ROLLOUT_PAUSED = "rollout_paused", "a rollout you started pauses (and managers)"
    ROLLOUT_ABORTED = "rollout_aborted", "a rollout you started is aborted (and managers)"
    ROLLOUT_ROLLED_BACK = "rollout_rolled_back", "a version you rolled out is rolled back (and managers)"
    ALERT_RAISED = "alert_raised", "a monitoring alert is raised (managers)"
    RECERTIFICATION_DUE = "recertification_due", "a version you own is due for re-certification in 14 days"


class NotificationPreference(models.Model):
    """A person's opt-outs. No row means every kind is on."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # Kinds (NotificationKind values) this person does not want.
    disabled_kinds = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"notification preferences of {self.user}"

    def wants(self, kind: str) -> bool:
        return kind not in self.disabled_kinds


class Notification(models.Model):
    """One e-mail to one person, written before it is sent so that a retry or
    a re-delivered task sends it at most once more, never to someone twice
    for one reason (`key` names the reason: an audit event, or a version's
    re-certification date)."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    key = models.CharField(max_length=100)
    to_address = models.EmailField(max_length=254)
    subject = models.CharField(max_length=300)
    body = models.TextField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="one_notification_per_user_and_reason")]

    def __str__(self) -> str:
        return f"{self.kind} to {self.to_address}"


class WebhookSubscription(models.Model):
    """Where to POST which events: one model's, or every model's (`model`
    None, admins only). The secret signs each delivery; it is shown once,
    when the subscription is made, and kept here because signing needs it."""

    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    model = models.ForeignKey(
        "registry.RegisteredModel", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    secret = models.CharField(max_length=100)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("manage_global_webhooks", "Can manage webhooks of every model, and for all models")]

    def __str__(self) -> str:
        scope = self.model.name if self.model_id else "all models"
        return f"webhook #{self.pk} ({scope})"

    def audit_scope(self) -> tuple[str, None]:
        return (self.model.name if self.model_id else ""), None

    def wants(self, event_type: str, model_name: str) -> bool:
        if event_type not in self.events:
            return False
        return self.model_id is None or self.model.name == model_name


class WebhookDelivery(models.Model):
    """One event sent (or being sent) to one subscription: the delivery log."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    audit_event_id = models.BigIntegerField()
    event_type = models.CharField(max_length=40)
    # The exact bytes POSTed (each attempt signs them with its own timestamp).
    body = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # A re-delivered dispatch task cannot queue one event twice for one subscriber.
            models.UniqueConstraint(fields=["subscription", "audit_event_id"], name="one_delivery_per_event"),
        ]
        indexes = [models.Index(fields=["status"], name="webhook_delivery_status", condition=Q(status="pending"))]

    def __str__(self) -> str:
        return f"delivery #{self.pk} of {self.event_type} to {self.subscription_id}"
