from django.conf import settings
from django.db import models
from django.urls import reverse

from glassbox.errors import Conflict, GlassboxError, NotPermitted


class ExplanationReport(models.Model):
    """One explanation job over a version: a dataset (or inline texts), a
    method and its parameters. Split into ExplanationChunks that workers run
    independently; the last chunk to finish hands over to finalisation."""

    class Method(models.TextChoices):
        SHAP = "shap", "SHAP (Owen values)"
        LIME = "lime", "LIME"
        PFI = "pfi", "permutation feature importance"
        IG = "ig", "integrated gradients"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    # The lifecycle, in one place: status -> statuses it may move to.
    ALLOWED_TRANSITIONS: dict[str, set[str]] = {
        Status.QUEUED: {Status.RUNNING, Status.FAILED, Status.CANCELLED},
        Status.RUNNING: {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED},
        Status.SUCCEEDED: set(),
        Status.FAILED: set(),
        Status.CANCELLED: set(),
    }
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="explanation_reports")
    method = models.CharField(max_length=8, choices=Method.choices)
    # Either a stored dataset (texts with true labels) or texts given inline.
    dataset = models.ForeignKey(
        "registry.Dataset", on_delete=models.PROTECT, null=True, blank=True, related_name="explanation_reports"
    )
    texts = models.JSONField(default=list, blank=True)
    text_count = models.PositiveIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    results = models.JSONField(null=True, blank=True)
    fidelity = models.JSONField(null=True, blank=True)
    # SHA-256 of the canonical JSON of `results` and of `fidelity`, set when
    # the report succeeds and recorded in its explanation.succeed event, so the
    # trail binds what the report said (governance.audit.content_digest).
    results_sha256 = models.CharField(max_length=64, blank=True)
    fidelity_sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    timings = models.JSONField(default=dict, blank=True)
    # How long it should take, said when it was requested: {"seconds", "rows_per_second", "basis", ...}.
    estimate = models.JSONField(default=dict, blank=True)
    # Finalisation runs (combine + fidelity); bounded like chunk attempts.
    finalize_attempts = models.PositiveSmallIntegerField(default=0)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["version", "method", "status"], name="report_version_method_status"),
            models.Index(fields=["status", "heartbeat_at"], name="report_status_heartbeat"),
        ]

    def __str__(self) -> str:
        return f"{self.method} report #{self.pk} of {self.version}"

    def get_absolute_url(self) -> str:
        return reverse("explanations:detail", kwargs={"pk": self.pk})

    def audit_scope(self) -> tuple[str, int]:
        return self.version.model.name, self.version.number

    def can_move_to(self, status: str) -> bool:
        return status in self.ALLOWED_TRANSITIONS[self.status]

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def is_global(self) -> bool:
        return self.method == self.Method.PFI

    def remaining_seconds(self, now) -> int | None:
        """Time left while the report is queued or running: from the pace so
        far once progress shows, before that the estimate less the time spent."""
        if self.is_finished:
            return None
        if self.status == self.Status.RUNNING and self.started_at and self.progress > 0:
            elapsed = (now - self.started_at).total_seconds()
            return max(0, round(elapsed * (100 - self.progress) / self.progress))
        seconds = (self.estimate or {}).get("seconds")
        if not isinstance(seconds, (int, float)):
            return None
        spent = (now - self.started_at).total_seconds() if self.started_at else 0.0
        return max(0, round(seconds - spent))

    def can_be_viewed_by(self, user) -> bool:
        return self.version.model.can_be_viewed_by(user)

    def cancel_refusal(self, user) -> GlassboxError | None:
        """Why `user` may not cancel this report now, or None. The requester
        cancels their own report; admins may cancel anyone's."""
        access = self.version.model.access_of(user)
        if not access.request_reports:
            return NotPermitted("Only engineers and reviewers may cancel explanation reports.")
        if user.pk != self.requested_by_id and not access.admin:
            return NotPermitted(f"Only {self.requested_by.get_username()}, who requested it, may cancel this report.")
        if not self.can_move_to(self.Status.CANCELLED):
            return Conflict(
                f"This report is {self.status}; only a queued or running report can be cancelled.",
                current_status=self.status,
            )
        return None

    def can_be_cancelled_by(self, user) -> bool:
        return self.cancel_refusal(user) is None


class ExplanationChunk(models.Model):
    """A slice of a report's work, run by one worker at a time. Its spec comes
    from the explainer's plan_chunks; its result feeds the explainer's combine."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        DONE = "done", "done"

    report = models.ForeignKey(ExplanationReport, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    spec = models.JSONField(default=dict)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    progress = models.FloatField(default=0.0)
    result = models.JSONField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    # When its task was last sent to the broker: a pending chunk whose message
    # was lost is sent again after a long wait (see reap_stale_work).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["report", "index"]
        constraints = [models.UniqueConstraint(fields=["report", "index"], name="unique_chunk_index_per_report")]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="chunk_status_heartbeat")]

    def __str__(self) -> str:
        return f"chunk {self.index} of report #{self.report_id}"
