"""Serving and staged rollouts: which version serves a model's traffic, the
rollouts that move traffic from the stable version to a candidate, the
analysis runs that decide each step, and what was served (prediction logs,
feedback, counters, alerts)."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from registry.models import Dataset, ModelVersion, RegisteredModel

# Default steps (Argo Rollouts' canary shape): a shadow step, then growing
# traffic shares. Each step bakes this long with no failed analysis before the
# rollout advances.
DEFAULT_BAKE_SECONDS = 300
DEFAULT_STEPS = [
    {"weight": 0, "shadow": True, "bake_seconds": DEFAULT_BAKE_SECONDS},
    {"weight": 5, "shadow": False, "bake_seconds": DEFAULT_BAKE_SECONDS},
    {"weight": 25, "shadow": False, "bake_seconds": DEFAULT_BAKE_SECONDS},
    {"weight": 50, "shadow": False, "bake_seconds": DEFAULT_BAKE_SECONDS},
    {"weight": 100, "shadow": False, "bake_seconds": DEFAULT_BAKE_SECONDS},
]

# Analysis thresholds; a rollout stores its own copy (defaults filled in).
DEFAULT_THRESHOLDS = {
    "max_error_rate": 0.01,  # candidate errors / candidate requests
    "max_latency_p95_ratio": 1.5,  # candidate p95 / stable p95
    "max_label_divergence": 0.1,  # Jensen-Shannon distance (base 2) of predicted-label distributions
    "min_shadow_agreement": 0.9,  # share of mirrored requests where candidate and stable agree
    "max_input_drift": 0.1,  # Jensen-Shannon distance of character distributions vs the reference set
    "min_requests": 20,  # candidate requests per interval below which a measurement is inconclusive
    "failure_limit": 0,  # failed analyses tolerated; one more aborts
}
DEFAULT_ANALYSIS_INTERVAL_SECONDS = 60


class ServingState(models.Model):
    """What serves a model's traffic. `stable_version` answers every request
    not routed to an active rollout's candidate. After a promotion the old
    stable stays here as `previous_version` (deployed, kept loaded) so an
    operator can go back at once, until it is retired."""

    model = models.OneToOneField(RegisteredModel, on_delete=models.PROTECT, related_name="serving")
    stable_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    previous_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    previous_retire_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"serving of {self.model.name}"

    def audit_scope(self) -> tuple[str, None]:
        return self.model.name, None

    def rollback_refusal(self, user, active: "Rollout | None") -> str | None:
        """Why `user` may not roll this model back now, in words for its pages
        and the 409 (what to do instead); None: they may. `active` is the
        model's active rollout, if any. The service asks it again under the
        lock with `user` None (the role was checked before)."""
        if user is not None and not self.model.access_of(user).release:
            return "Only maintainers of the model's team may roll it back."
        if active is not None:
            return (
                f"Rollout #{active.pk} of v{active.candidate.number} is {active.status}: abort it to send all "
                f"traffic back to the stable version at once (POST /api/v1/rollouts/{active.pk}/abort/)."
            )
        if self.stable_version_id is None:
            return f"{self.model.name} serves nothing yet: there is nothing to roll back."
        if self.previous_version_id is None:
            return (
                f"There is no previous version to go back to (it was retired, already rolled back to, or "
                f"v{self.stable_version.number} was the first deployment): roll out an approved version instead."
            )
        if self.previous_version.status != ModelVersion.Status.DEPLOYED:
            return (
                f"The previous version v{self.previous_version.number} is {self.previous_version.status}: "
                "roll out an approved version instead."
            )
        return None


class Rollout(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        PROGRESSING = "progressing", "progressing"
        PAUSED = "paused", "paused"
        PROMOTED = "promoted", "promoted"
        ABORTED = "aborted", "aborted"

    ACTIVE_STATUSES = (Status.PENDING, Status.PROGRESSING, Status.PAUSED)

    # The lifecycle, in one place: status -> statuses it may move to.
    ALLOWED_TRANSITIONS: dict[str, set[str]] = {
        Status.PENDING: {Status.PROGRESSING, Status.PAUSED, Status.PROMOTED, Status.ABORTED},
        Status.PROGRESSING: {Status.PAUSED, Status.PROMOTED, Status.ABORTED},
        Status.PAUSED: {Status.PROGRESSING, Status.PROMOTED, Status.ABORTED},
        Status.PROMOTED: set(),
        Status.ABORTED: set(),
    }
    # The manual gates: action -> the status it moves a rollout to.
    ACTION_TARGETS: dict[str, str] = {
        "promote": Status.PROMOTED,
        "pause": Status.PAUSED,
        "resume": Status.PROGRESSING,
        "abort": Status.ABORTED,
    }

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="rollouts")
    candidate = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="rollouts_as_candidate")
    # The version serving when the rollout started (None: first deployment).
    stable = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="rollouts_as_stable"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # [{"weight": 0-100, "shadow": bool, "bake_seconds": int}, ...], weights increasing.
    steps = models.JSONField(default=list)
    current_step = models.PositiveSmallIntegerField(default=0)
    step_started_at = models.DateTimeField(null=True, blank=True)
    thresholds = models.JSONField(default=dict)
    analysis_interval_seconds = models.PositiveIntegerField(default=DEFAULT_ANALYSIS_INTERVAL_SECONDS)
    failures = models.PositiveIntegerField(default=0)
    # Why it is paused or aborted, in words a person reads on the rollout page.
    status_reason = models.TextField(blank=True, max_length=2000)
    last_analysis_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A promoted rollout that a rollback undid: its candidate went back to
    # approved and the stable it replaced serves again. Status stays promoted
    # (it was); these say what happened after.
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    rolled_back_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    rollback_reason = models.TextField(blank=True, max_length=2000)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One active rollout per model, held by the database itself.
            models.UniqueConstraint(
                fields=["model"],
                condition=Q(status__in=["pending", "progressing", "paused"]),
                name="one_active_rollout_per_model",
            ),
        ]

    def __str__(self) -> str:
        return f"rollout #{self.pk} of {self.model.name} v{self.candidate.number}"

    def get_absolute_url(self) -> str:
        return reverse("rollouts:rollout-detail", kwargs={"pk": self.pk})

    def audit_scope(self) -> tuple[str, int]:
        return self.model.name, self.candidate.number

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def next_step_label(self) -> str:
        """What "next step" does now, in words for the button."""
        if self.current_step + 1 >= len(self.steps):
            return "promote (this is the last step)"
        step = self.steps[self.current_step + 1]
        return "shadow" if step.get("shadow") else f"step {self.current_step + 2}: {step.get('weight', 0)} %"

    def can_move_to(self, status: str) -> bool:
        return status in self.ALLOWED_TRANSITIONS[self.status]

    def action_refusal(self, user, action: str) -> str | None:
        """Why `user` may not take the manual `action` (a key of
        ACTION_TARGETS, or "step": the next step) on this rollout now, in words for its page; None:
        they may. The services ask it again under their locks, with `user`
        None (the platform, which needs no role)."""
        if user is not None and not self.model.access_of(user).release:
            return "Only maintainers of the model's team may act on rollouts."
        if action == "resume":
            if self.status == self.Status.PAUSED:
                return None
            return f"Only a paused rollout can resume; this one is {self.status}."
        if action == "step":
            # One step forward (the promotion itself at the last step).
            if self.status in (self.Status.PROGRESSING, self.Status.PAUSED):
                return None
            return f"Only an active rollout can move to its next step; this one is {self.status}."
        target = self.ACTION_TARGETS[action]
        if not self.can_move_to(target):
            return f"The rollout is {self.status}; it cannot be {target} now."
        return None

    @property
    def step(self) -> dict:
        return self.steps[self.current_step] if self.steps else {"weight": 0, "shadow": False, "bake_seconds": 0}

    @property
    def candidate_weight(self) -> int:
        """Percent of live traffic the candidate answers now (0 while
        shadowing, paused or finished: a paused rollout keeps its weight)."""
        if self.status not in (self.Status.PROGRESSING, self.Status.PAUSED):
            return 0
        return int(self.step.get("weight", 0))

    @property
    def is_shadowing(self) -> bool:
        return self.status in (self.Status.PROGRESSING, self.Status.PAUSED) and bool(self.step.get("shadow"))


class AnalysisRun(models.Model):
    """One analysis of one interval of a rollout's traffic: every measured
    value with its threshold and verdict, the overall verdict, and what the
    rollout did about it."""

    class Verdict(models.TextChoices):
        SUCCESSFUL = "successful", "successful"
        FAILED = "failed", "failed"
        INCONCLUSIVE = "inconclusive", "inconclusive"

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="analysis_runs")
    step_index = models.PositiveSmallIntegerField()
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    # [{"name", "value", "threshold", "comparison", "verdict", "detail"}, ...]
    measurements = models.JSONField(default=list)
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    # What the rollout did after this run: "none", "advanced", "paused", "aborted", "promoted".
    action = models.CharField(max_length=16, default="none")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-window_end", "-id"]
        constraints = [
            # A tick that runs twice (a re-delivered task) cannot analyse one window twice.
            models.UniqueConstraint(fields=["rollout", "window_end"], name="one_analysis_per_window"),
        ]

    def __str__(self) -> str:
        return f"analysis of {self.rollout} at {self.window_end:%Y-%m-%d %H:%M:%S}: {self.verdict}"


class PredictionLog(models.Model):
    """One served (or mirrored) prediction. Written in batches off the
    request path; `prediction_id` is what the client gets back and what
    feedback refers to."""

    id = models.BigAutoField(primary_key=True)
    prediction_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="+", db_index=False)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+", db_index=False)
    rollout = models.ForeignKey(Rollout, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # A shadow answer: computed on a mirrored copy of live traffic, never returned.
    shadow = models.BooleanField(default=False)
    # For a shadow answer, the live prediction it mirrors (agreement is measured between the two).
    mirror_of = models.UUIDField(null=True, blank=True, db_index=True)
    # "stable", "candidate", "pinned" or "shadow": why this version answered.
    route = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=16, blank=True)
    # The input, cut to a bound, for drift measurement and audits of what was served.
    input_text = models.TextField(blank=True)
    input_length = models.PositiveIntegerField(default=0)
    label = models.CharField(max_length=200, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    latency_ms = models.FloatField()
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["version", "created_at"], name="predlog_version_time"),
            models.Index(fields=["model", "created_at"], name="predlog_model_time"),
            models.Index(fields=["rollout", "created_at"], name="predlog_rollout_time"),
        ]
        permissions = [
            ("serve_prediction", "Can request predictions from a model"),
            ("pin_version", "Can pin the version that answers a prediction (testing)"),
        ]

    def __str__(self) -> str:
        return f"prediction {self.prediction_id}"


class Feedback(models.Model):
    """The true label of an earlier prediction: live accuracy per version."""

    prediction = models.OneToOneField(PredictionLog, on_delete=models.PROTECT, related_name="feedback")
    label = models.CharField(max_length=200)
    correct = models.BooleanField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # When this row went into an audited feedback summary (None: not yet;
    # rollouts.services.feedback_summarize).
    summarized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The summarizer's scan: only the rows not summarized yet.
            models.Index(fields=["id"], condition=Q(summarized_at__isnull=True), name="feedback_unsummarized"),
        ]

    def __str__(self) -> str:
        return f"feedback on {self.prediction.prediction_id}"


class PredictionCounter(models.Model):
    """Running totals per version and route for `/metrics` (Prometheus
    counters never go down, and counting millions of log rows per scrape
    would not scale). The log writer adds to them with each batch."""

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    route = models.CharField(max_length=16)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0.0)
    # Cumulative counts per latency bucket upper bound in ms ("5", "10", ..., "+Inf").
    latency_buckets = models.JSONField(default=dict)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "route"], name="one_counter_per_version_route")]

    def __str__(self) -> str:
        return f"counters of {self.version} ({self.route})"


class PredictionAggregate(models.Model):
    """What one version served in one minute (span 60) or half-hour (span
    1800), summed as the prediction log is written (rollouts/aggregation.py):
    the monitoring page and the monitor read these instead of binning raw
    rows. The half-hour rows hold the same sums as their 30 minutes and exist
    so a 7-day window reads 336 rows per version, not 10,080.

    Sums only (so two batches add up): requests, errors, latency histogram
    (non-cumulative counts per bound of prediction_log.LATENCY_BUCKETS_MS,
    +Inf last) with sum, min and max; predicted labels and confidence (of
    answered rows); feedback on the predictions of the period; and a drift
    sketch of the input texts: length bins (rollouts.drift.LENGTH_BINS), total
    length, non-space characters, and the most frequent characters by name
    (at most aggregation.SKETCH_CHARACTERS[span]) with the rest counted in
    `characters_other`."""

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    span_seconds = models.PositiveIntegerField()
    start = models.DateTimeField()
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    latency_buckets = models.JSONField(default=list)
    latency_ms_sum = models.FloatField(default=0.0)
    latency_ms_min = models.FloatField(null=True, blank=True)
    latency_ms_max = models.FloatField(null=True, blank=True)
    labels = models.JSONField(default=dict)
    confidence_sum = models.FloatField(default=0.0)
    confidence_count = models.BigIntegerField(default=0)
    # Counts per tenth of confidence: [0, 0.1), ..., [0.9, 1].
    confidence_buckets = models.JSONField(default=list)
    feedback = models.BigIntegerField(default=0)
    correct = models.BigIntegerField(default=0)
    texts = models.BigIntegerField(default=0)
    text_length_sum = models.BigIntegerField(default=0)
    length_bins = models.JSONField(default=list)
    characters_total = models.BigIntegerField(default=0)
    characters = models.JSONField(default=dict)
    characters_other = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "span_seconds", "start"], name="one_aggregate_per_period"),
        ]

    def __str__(self) -> str:
        return f"{self.version} {self.span_seconds} s from {self.start:%Y-%m-%d %H:%M}"


class VersionReference(models.Model):
    """The evaluation dataset a version's live inputs are compared with for
    drift, and its profile (lengths, unknown-character rate, character
    distribution), computed once."""

    version = models.OneToOneField(ModelVersion, on_delete=models.PROTECT, related_name="reference")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="+")
    profile = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"reference of {self.version}: {self.dataset}"


class Alert(models.Model):
    """A monitored value crossed its threshold. Open until the value is back
    within bounds (then `cleared_at` is set); shown on the dashboard."""

    class Severity(models.TextChoices):
        WARNING = "warning", "warning"
        # Someone must act: e.g. a deployed version whose re-certification was rejected.
        CRITICAL = "critical", "critical"

    # Not measured values: the certification of a deployed version (value: days
    # past its date, or 1 for a rejected round; bound 0). Cleared when it is
    # re-certified or stops serving, never by the live monitor.
    CERTIFICATION_LAPSED = "certification_lapsed"
    CERTIFICATION_REFUSED = "certification_refused"
    CERTIFICATION_METRICS = (CERTIFICATION_LAPSED, CERTIFICATION_REFUSED)
    # A process refused the version's stored artifact: its bytes no longer hash
    # to the registered SHA-256 (value 1, bound 0). Open whatever the version's
    # status, until a later fetch verifies again (the object was restored).
    ARTIFACT_INTEGRITY = "artifact_integrity"
    # Expired prediction logs could not be archived, so none were deleted
    # (value: days waiting; bound 0). Raised on the model's serving (else
    # latest) version; cleared by the next retention run that archives them.
    PREDICTION_ARCHIVE_FAILED = "prediction_archive_failed"

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="+")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    metric = models.CharField(max_length=64)
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.WARNING)
    value = models.FloatField()
    threshold = models.FloatField()
    message = models.CharField(max_length=500)
    raised_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "metric"], condition=Q(cleared_at__isnull=True), name="one_open_alert_per_metric"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.metric} alert on {self.version}"

    def audit_scope(self) -> tuple[str, int]:
        return self.model.name, self.version.number


class RetentionDay(models.Model):
    """Progress of the retention task (rollouts/retention.py) through one
    model's expired day: the archive file written for it (key, SHA-256, rows)
    and how far its deletion got. Written before the first row is deleted and
    moved forward in each batch's transaction, so a run killed at any point
    resumes where it stopped. `part` > 1: rows of a day already processed
    that were kept back (e.g. feedback arrived after the day was archived)."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="+")
    day = models.DateField()
    part = models.PositiveSmallIntegerField(default=1)
    # Empty when archiving is off (GLASSBOX_PREDICTION_ARCHIVE=off).
    archive_key = models.CharField(max_length=300, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    # Rows (and their feedback) in the archive: the rows this part deletes.
    rows = models.BigIntegerField(default=0)
    feedback_rows = models.BigIntegerField(default=0)
    first_id = models.BigIntegerField(default=0)
    last_id = models.BigIntegerField(default=0)
    rows_deleted = models.BigIntegerField(default=0)
    feedback_deleted = models.BigIntegerField(default=0)
    # Every row up to this id has been dealt with (resume point).
    deleted_through_id = models.BigIntegerField(default=0)
    tier = models.CharField(max_length=10)
    retention_days = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the audit event that reports this part was recorded.
    audited_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["model", "day", "part"]
        constraints = [models.UniqueConstraint(fields=["model", "day", "part"], name="one_retention_part_per_day")]

    def __str__(self) -> str:
        return f"retention of {self.model.name} {self.day:%Y-%m-%d} part {self.part}"
