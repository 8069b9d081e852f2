from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from glassbox.errors import Conflict, GlassboxError, NotPermitted


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
            # The audit trail's filters walk these newest-first by id (keyset
            # pagination): one (filter column, id) index per filter.
            models.Index(fields=["actor_username", "id"], name="audit_actor_username_id"),
            models.Index(fields=["model_name", "id"], name="audit_model_id"),
            models.Index(fields=["outcome", "id"], name="audit_outcome_id"),
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


class ReviewRequest(models.Model):
    """One round of second-person review of a version: opened by `submit`,
    closed by the approval that completes the quorum or by one reject. The
    bar (approvals, evidence) is copied from the policy when the review opens,
    so a later policy change never moves the goalposts of a running review."""

    class Status(models.TextChoices):
        OPEN = "open", "open"
        APPROVED = "approved", "approved"
        REJECTED = "rejected", "rejected"

    class Kind(models.TextChoices):
        # The first review moves the version registered -> in_review -> approved | rejected.
        INITIAL = "initial", "review"
        # A re-certification round of an approved or deployed version leaves
        # its status alone: approval renews the date, reject withdraws the
        # certification (no new rollout; a deployed one keeps serving).
        RECERTIFICATION = "recertification", "re-certification round"

    # The version statuses in which each kind of round can be decided.
    DECIDABLE_VERSION_STATUSES: dict[str, set[str]] = {
        Kind.INITIAL: {"in_review"},
        Kind.RECERTIFICATION: {"approved", "deployed"},
    }
    # Any succeeded report counts as fresh evidence when the tier names no method.
    ANY_METHOD = "any"

    # Closed reviews are final: a rejected version never comes back.
    ALLOWED_TRANSITIONS: dict[str, set[str]] = {
        Status.OPEN: {Status.APPROVED, Status.REJECTED},
        Status.APPROVED: set(),
        Status.REJECTED: set(),
    }

    version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="reviews")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    opened_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    required_approvals = models.PositiveSmallIntegerField()
    # Explanation methods that must have a succeeded report for the version.
    required_evidence = models.JSONField(default=list, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.INITIAL)
    # Set on a re-certification round whose tier asks for fresh evidence: the
    # approval it renews closed then, and the required reports must have
    # finished after it (copied when the round opens, like the rest of the bar).
    fresh_evidence_since = models.DateTimeField(null=True, blank=True)
    # Whether an approver must first have opened the required reports (see
    # governance.evidence.required_reports); copied from the policy too.
    require_opened_evidence = models.BooleanField(default=False)
    # At least one approver must belong to no team (the policy's require_independent_approver).
    require_independent_approver = models.BooleanField(default=False)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["version"], condition=models.Q(status="open"), name="one_open_review_per_version"
            ),
        ]
        indexes = [models.Index(fields=["status", "opened_at"], name="review_status_opened")]

    def __str__(self) -> str:
        return f"review #{self.pk} of {self.version}"

    def get_absolute_url(self) -> str:
        return reverse("reviews:detail", kwargs={"name": self.version.model.name, "number": self.version.number})

    def audit_scope(self) -> tuple[str, int]:
        return self.version.model.name, self.version.number

    def can_move_to(self, status: str) -> bool:
        return status in self.ALLOWED_TRANSITIONS[self.status]

    def approvals(self) -> list["Decision"]:
        # Reads the prefetched decisions when there are any (lists, pages).
        return [d for d in self.decisions.all() if d.decision == Decision.Verdict.APPROVE]

    @property
    def is_recertification(self) -> bool:
        return self.kind == self.Kind.RECERTIFICATION

    def missing_evidence(self) -> list[str]:
        """Required explanation methods without a succeeded report for the
        version, in policy order. A round that needs fresh evidence counts
        only reports finished after `fresh_evidence_since`; when its tier
        names no method, one fresh report of any method is needed ("any")."""
        from explanations.selectors import succeeded_methods

        if self.fresh_evidence_since is not None:
            have = succeeded_methods(version=self.version, finished_after=self.fresh_evidence_since)
            if not self.required_evidence:
                return [] if have else [self.ANY_METHOD]
        elif not self.required_evidence:
            return []
        else:
            have = succeeded_methods(version=self.version)
        return [method for method in self.required_evidence if method not in have]

    def decision_refusal(self, user, decision: str, *, evidence: dict | None = None) -> GlassboxError | None:
        """Why `user` may not record `decision` on this review now, or None.
        The service raises what this returns; pages show its message next to
        the disabled button. Separation of duties lives here, nowhere else.
        `evidence` is the snapshot the service is about to record (pages
        leave it out and one is read here): the refusal and the record then
        speak of the same reports."""
        version = self.version
        if not (user.is_authenticated and user.has_perm("governance.add_decision")):
            return NotPermitted("Only reviewers may decide on versions.")
        if self.status != self.Status.OPEN:
            return Conflict(
                f"{version} is {version.status}; its review is {self.status}, so nothing more can be decided.",
                current_status=version.status,
            )
        if user.pk == version.created_by_id:
            return NotPermitted(f"You uploaded {version}; another reviewer must decide on it.")
        if user.pk == self.opened_by_id:
            return NotPermitted(f"You submitted {version} for review; another reviewer must decide on it.")
        if any(d.reviewer_id == user.pk for d in self.decisions.all()):
            return Conflict(f"You have already decided on {version}; each reviewer counts once.")
        if decision == Decision.Verdict.APPROVE:
            refusal = self.independence_refusal(user)
            if refusal is not None:
                return refusal
            from governance.evidence import evidence_snapshot, unopened_required

            if evidence is None or self.fresh_evidence_since is not None:
                # A round that needs fresh evidence counts only reports finished after its cut-off.
                missing = self.missing_evidence()
            else:
                have = {entry["method"] for entry in evidence["reports"]}
                missing = [method for method in self.required_evidence if method not in have]
            if missing and self.fresh_evidence_since is not None:
                methods = "any method" if missing == [self.ANY_METHOD] else ", ".join(missing)
                return Conflict(
                    f"{version} cannot be re-certified yet: its {version.model.risk_tier}-risk policy needs fresh "
                    f"evidence, a succeeded explanation report for {methods} finished after the approval this "
                    f"round renews ({self.fresh_evidence_since:%Y-%m-%d %H:%M} UTC), and there is none.",
                    missing_evidence=missing,
                    fresh_evidence_since=self.fresh_evidence_since.isoformat(),
                )
            if missing:
                return Conflict(
                    f"{version} cannot be approved yet: its {version.model.risk_tier}-risk policy needs a succeeded "
                    f"explanation report for {', '.join(missing)}, and there is none.",
                    missing_evidence=missing,
                )
            if self.require_opened_evidence:
                if evidence is None:
                    evidence = evidence_snapshot(review=self, reviewer=user)
                unopened = unopened_required(review=self, evidence=evidence)
                if unopened:
                    names = ", ".join(entry["label"] for entry in unopened)
                    return Conflict(
                        f"{version} cannot be approved by you yet: its {version.model.risk_tier}-risk policy asks "
                        f"the approver to open the evidence first, and you have not opened {names}.",
                        unopened_reports=[entry["id"] for entry in unopened],
                    )
        return None

    def independence_refusal(self, user) -> GlassboxError | None:
        """Validation independent of development: a member of the team that
        owns the model may not approve its versions, and where the review's
        policy asks for it, the approval that completes the quorum needs at
        least one approver who belongs to no team at all."""
        team = self.version.model.team
        if TeamMembership.objects.filter(user=user, team=team).exists():
            return NotPermitted(
                f"You are a member of team {team.name}, which owns {self.version.model.name}: validation must be "
                "independent of development, so a reviewer outside the team must approve it.",
                code="approver_not_independent",
            )
        if self.require_independent_approver and len(self.approvals()) + 1 >= self.required_approvals:
            approvers = [d.reviewer_id for d in self.approvals()] + [user.pk]
            if not set(approvers) - set(
                TeamMembership.objects.filter(user_id__in=approvers).values_list("user_id", flat=True)
            ):
                return Conflict(
                    f"{self.version} is {self.version.model.risk_tier} risk: its policy needs at least one approver "
                    "who belongs to no team, and neither you nor the approvers before you do.",
                    code="independent_approver_required",
                )
        return None


class Decision(models.Model):
    """One reviewer's verdict in one review, with the comment that explains it."""

    class Verdict(models.TextChoices):
        APPROVE = "approve", "approve"
        REJECT = "reject", "reject"

    review = models.ForeignKey(ReviewRequest, on_delete=models.PROTECT, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=Verdict.choices)
    comment = models.TextField(blank=True, max_length=10_000)
    created_at = models.DateTimeField(default=timezone.now)
    # What the verdict was given on, taken under the review's lock: every
    # succeeded report of the version with its digests and fidelity headline,
    # and which of them this reviewer had opened (governance.evidence). The
    # same dict is in the decision's audit event, so the trail binds it.
    evidence = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # The backstop of "no reviewer counts twice" (the service checks first).
            models.UniqueConstraint(fields=["review", "reviewer"], name="one_decision_per_reviewer"),
        ]

    def __str__(self) -> str:
        return f"{self.decision} of {self.review.version} by {self.reviewer}"

    def audit_scope(self) -> tuple[str, int]:
        return self.review.audit_scope()


class ReportOpen(models.Model):
    """A reviewer of an open review opened one of the version's reports (its
    page or an export). One compact row per (review, reviewer, report), the
    first open only: an access log, not a chain event per page view. What
    counts is bound later, in the evidence of the reviewer's decision."""

    class Via(models.TextChoices):
        PAGE = "page", "report page"
        EXPORT = "export", "export"
        API = "api", "API"

    review = models.ForeignKey(ReviewRequest, on_delete=models.PROTECT, related_name="report_opens")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # No constraint: the log must not stand in the way of (or hide) a report
    # row that disappears; audit_verify --deep names that.
    report = models.ForeignKey(
        "explanations.ExplanationReport", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    via = models.CharField(max_length=8, choices=Via.choices)
    opened_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["opened_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["review", "reviewer", "report"], name="one_open_per_reviewer_report"),
        ]

    def __str__(self) -> str:
        return f"{self.reviewer} opened report #{self.report_id} in review #{self.review_id}"


class IntegrityAlert(models.Model):
    """Something stored no longer matches the digest the trail recorded for it
    (found by the scheduled deep verification). Nothing is repaired: the
    alert stays open until a later check finds the subject matching again
    (a person restored it, from a backup say)."""

    subject = models.CharField(max_length=200)
    message = models.CharField(max_length=1000)
    raised_at = models.DateTimeField(default=timezone.now)
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject"], condition=models.Q(cleared_at__isnull=True), name="one_open_integrity_alert"
            ),
        ]

    def __str__(self) -> str:
        return f"integrity alert: {self.subject}"


class ApiToken(models.Model):
    """An API key of one user. Only the SHA-256 of the key is stored: the key
    itself is shown once, when the token is created. A token without scopes
    acts with all of its user's permissions; a scoped one (client
    applications) may only call the scoped operations on the named models,
    and never more than its user may."""

    class Scope(models.TextChoices):
        PREDICT = "predict", "predict"
        FEEDBACK = "feedback", "feedback"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    # The key's first characters, so that a person can tell their tokens apart.
    prefix = models.CharField(max_length=8)
    scopes = models.JSONField(default=list, blank=True)
    # The names of the models a scoped token reaches (`models` in the API).
    model_names = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        # Never the key (we do not have it) nor its hash.
        return f"token {self.name!r} of {self.user_id}"

    @property
    def is_scoped(self) -> bool:
        return bool(self.scopes)

    def refusal(self, now) -> str:
        """Why this token may not be used now ("" when it may)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return ""

    def allows(self, scope: str | None, model_name: str | None) -> bool:
        """Whether the token reaches an operation of `scope` (None: an
        operation outside every scope) on `model_name`."""
        if not self.is_scoped:
            return True
        return scope in self.scopes and model_name in self.model_names


class OidcIdentity(models.Model):
    """Which account a person of the identity provider signs in to: the
    provider's (issuer, subject) pair, never a username or e-mail address
    (those can be reused or changed at the provider, and would hand one
    person's account to another)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identity")
    issuer = models.CharField(max_length=300)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="one_account_per_oidc_subject")]

    def __str__(self) -> str:
        return f"{self.issuer} {self.subject}"


class Team(models.Model):
    """A group of people that owns models. What a member may do with the
    team's models comes from their membership's role (governance/access.py)."""

    name = models.CharField(
        max_length=100,
        unique=True,
        validators=[
            # The same slug rule as model names: team names appear in URLs and audit rows.
            RegexValidator(
                r"^[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?$",
                "Use 1-100 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit.",
            )
        ],
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        # Global abilities of the admin and manager roles (governance/roles.py).
        permissions = [
            ("manage_teams", "Create teams, manage any team and move models between teams"),
            ("view_all_models", "Read every model, whichever team owns it"),
        ]

    def __str__(self) -> str:
        return self.name

    def audit_scope(self) -> tuple[str, None]:
        return "", None


class TeamMembership(models.Model):
    class Role(models.TextChoices):
        # In rising order of what they may do; each includes the ones before.
        VIEWER = "viewer", "viewer"
        ENGINEER = "engineer", "engineer"
        MAINTAINER = "maintainer", "maintainer"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships")
    role = models.CharField(max_length=12, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team", "user"]
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team_and_user")]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.team}"

    def audit_scope(self) -> tuple[str, None]:
        return "", None
