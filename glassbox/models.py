"""The platform's own rows: shared plumbing, no domain rules."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class IdempotencyRecord(models.Model):
    """The first answer to a POST sent with an `Idempotency-Key` header
    (glassbox/idempotency.py): a retry with the same key and body gets it
    back instead of starting the work again. One key per user: the unique
    constraint is also what turns two concurrent duplicates into one run and
    one 409."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    # "POST /api/v1/models/m/versions/": a key reused on another endpoint is a conflict.
    endpoint = models.CharField(max_length=400)
    # SHA-256 of the method, path and body (a file by its SHA-256).
    fingerprint = models.CharField(max_length=64)
    # Null while the first request is still running.
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="unique_idempotency_key_per_user")]

    def __str__(self) -> str:
        return f"idempotency key of user {self.user_id} on {self.endpoint}"
