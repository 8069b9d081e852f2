"""Every kind of event the audit trail records, in one place.

The trail stores an action as its dotted text ("version.create"), so this is a
plain StrEnum, not field choices: the column and its history stay as they are,
and a member compares equal to the text it stands for. Add a member here before
recording a new kind of event; a misspelt member is an AttributeError at import,
where a misspelt string would have been a silent new kind of event.
"""

from enum import StrEnum


class AuditAction(StrEnum):
    # Accounts and sign-in.
    AUTH_LOGIN = "auth.login"
    AUTH_LOGOUT = "auth.logout"
    AUTH_PASSWORD_CHANGE = "auth.password_change"
    AUTH_TOKEN = "auth.token"
    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    # A token refused: expired, revoked, or outside its scopes or models.
    TOKEN_REFUSE = "token.refuse"
    # Signing in through the company's identity provider (OpenID Connect).
    OIDC_LOGIN = "auth.oidc_login"
    OIDC_ACCOUNT_CREATE = "auth.oidc_account_create"
    OIDC_ROLES_SYNC = "auth.oidc_roles_sync"

    # The Django admin, mirrored from its LogEntry rows.
    ADMIN_ADD = "admin.add"
    ADMIN_CHANGE = "admin.change"
    ADMIN_DELETE = "admin.delete"

    # The trail itself.
    AUDIT_CHECKPOINT = "audit.checkpoint"
    AUDIT_EXPORT = "audit.export"
    # Deep verification found stored evidence that no longer matches its recorded digest.
    AUDIT_INTEGRITY_ALERT = "audit.integrity_alert"
    # ...and a later check found it matching again (restored by a person, from a backup).
    AUDIT_INTEGRITY_CLEARED = "audit.integrity_cleared"

    # Teams: who belongs to which team in which role, and which team owns a model.
    TEAM_CREATE = "team.create"
    TEAM_MEMBER_ADD = "team.member_add"
    TEAM_MEMBER_ROLE = "team.member_role"
    TEAM_MEMBER_REMOVE = "team.member_remove"

    # Registry.
    MODEL_CREATE = "model.create"
    MODEL_TEAM_MOVE = "model.team_move"
    # An admin turned the redaction of personal data in stored prediction inputs on or off.
    MODEL_INPUT_REDACTION = "model.input_redaction"
    # Its description or risk tier changed (PATCH /api/v1/models/{name}/).
    MODEL_UPDATE = "model.update"
    MODEL_ARCHIVE = "model.archive"
    MODEL_UNARCHIVE = "model.unarchive"
    DATASET_CREATE = "dataset.create"
    # A process fetched a stored artifact or dataset whose bytes no longer hash
    # to its registered SHA-256, and refused to load it.
    ARTIFACT_REFUSED = "artifact.refused"
    VERSION_CREATE = "version.create"
    # Its model card edited while it is still registered.
    VERSION_CARD_UPDATE = "version.card_update"
    VERSION_SUBMIT = "version.submit"
    VERSION_APPROVE = "version.approve"
    VERSION_REJECT = "version.reject"
    VERSION_DEPLOY = "version.deploy"
    VERSION_RETIRE = "version.retire"
    # deployed -> approved: a rollback took the version out of service.
    VERSION_ROLLBACK = "version.rollback"
    VERSION_REFERENCE_SET = "version.reference_set"
    # Re-certification (README "Re-certification"): an engineer asks for a new
    # round; its approval renews the date; its reject withdraws the certification
    # without touching the status (the version keeps serving).
    VERSION_RECERTIFY_REQUEST = "version.recertify_request"
    VERSION_RECERTIFY = "version.recertify"
    VERSION_RECERTIFY_REJECT = "version.recertify_reject"
    # Which inference backend serves a version (ONNX Runtime after its agreement check, or torch).
    VERSION_INFERENCE_BACKEND = "version.inference_backend"

    # Reviews.
    REVIEW_SUBMIT = "review.submit"
    REVIEW_OPEN = "review.open"
    REVIEW_DECIDE = "review.decide"
    REVIEW_APPROVE = "review.approve"
    REVIEW_REJECT = "review.reject"
    REVIEW_CLOSE = "review.close"

    # Explanation reports.
    EXPLANATION_REQUEST = "explanation.request"
    EXPLANATION_START = "explanation.start"
    EXPLANATION_SUCCEED = "explanation.succeed"
    EXPLANATION_FAIL = "explanation.fail"
    EXPLANATION_CANCEL = "explanation.cancel"
    EXPLANATION_REQUEUE = "explanation.requeue"

    # Rollouts and their analysis.
    ROLLOUT_START = "rollout.start"
    ROLLOUT_ADVANCE = "rollout.advance"
    ROLLOUT_PROMOTE = "rollout.promote"
    ROLLOUT_PAUSE = "rollout.pause"
    ROLLOUT_RESUME = "rollout.resume"
    ROLLOUT_ABORT = "rollout.abort"
    ROLLOUT_ANALYSIS = "rollout.analysis"
    ROLLOUT_ANALYSIS_FAILED = "rollout.analysis_failed"
    # The previous deployed version serves all traffic again (recorded on the promoted rollout it undoes).
    ROLLOUT_ROLLBACK = "rollout.rollback"

    # Serving and monitoring.
    PREDICTION_REQUEST = "prediction.request"
    PREDICTION_PIN = "prediction.pin"
    FEEDBACK_RECORD = "feedback.record"
    # Feedback rows are observations: one audited summary per sender and model per interval.
    FEEDBACK_SUMMARY = "feedback.summary"
    MONITOR_ALERT_RAISED = "monitor.alert_raised"
    MONITOR_ALERT_CLEARED = "monitor.alert_cleared"
    # Expired prediction logs archived and deleted (one event per model and run: rows, period, files with SHA-256).
    PREDICTION_RETENTION = "prediction.retention"
    # Archived prediction logs restored into a scratch table for an investigation.
    PREDICTION_RESTORE = "prediction.restore"

    # Notifications and webhooks.
    NOTIFICATION_PREFERENCES = "notification.preferences"
    WEBHOOK_CREATE = "webhook.create"
    WEBHOOK_DELETE = "webhook.delete"
