"""The words of each notification e-mail: a subject and a plain-text body
per kind, with a link to the page where the reader acts."""

from django.conf import settings

from notifications.models import NotificationKind


def _link(path: str) -> str:
    return f"{settings.GLASSBOX_BASE_URL}{path}"


def _footer() -> str:
    return f"\n\n--\nGlassbox. Turn these e-mails off, kind by kind, at {_link('/account/notifications/')}\n"


def render(kind: str, *, event=None, **context) -> tuple[str, str]:
    who = (event.actor_username if event is not None else "") or "the platform"
    if kind == NotificationKind.REVIEW_OPENED:
        version = context["version"]
        review = context["review"]
        subject = f"[Glassbox] Review requested: {version}"
        body = (
            f"{who} submitted {version} ({version.model.risk_tier} risk) for review.\n"
            f"It needs {review.required_approvals} approval(s).\n\nReview it: {_link(review.get_absolute_url())}"
        )
    elif kind == NotificationKind.REVIEW_DECIDED:
        decision = context["decision"]
        version = context["version"]
        verb = "approved" if decision.decision == "approve" else "rejected"
        subject = f"[Glassbox] {version}: {decision.reviewer.get_username()} {verb} it"
        body = f"{decision.reviewer.get_username()} {verb} {version}."
        if decision.comment:
            body += f"\n\nTheir comment:\n{decision.comment}"
        body += f"\n\nThe review: {_link(context['review'].get_absolute_url())}"
    elif kind in (
        NotificationKind.ROLLOUT_PAUSED,
        NotificationKind.ROLLOUT_ABORTED,
        NotificationKind.ROLLOUT_ROLLED_BACK,
    ):
        verb = {
            NotificationKind.ROLLOUT_PAUSED: "paused",
            NotificationKind.ROLLOUT_ABORTED: "aborted",
            NotificationKind.ROLLOUT_ROLLED_BACK: "rolled back",
        }[kind]
        rollout = context.get("rollout")
        label = str(rollout) if rollout is not None else (event.object_label if event is not None else "a rollout")
        reason = ""
        if event is not None:
            reason = str((event.detail or {}).get("reason") or "")
        subject = f"[Glassbox] {label} {verb}"
        body = f"{label} was {verb} by {who}."
        if reason:
            body += f"\n\nReason: {reason}"
        if kind == NotificationKind.ROLLOUT_PAUSED:
            body += "\n\nA paused rollout waits for a person: resume, promote or abort it."
        if rollout is not None:
            body += f"\n\nThe rollout: {_link(rollout.get_absolute_url())}"
    elif kind == NotificationKind.ALERT_RAISED:
        alert = context["alert"]
        subject = f"[Glassbox] Alert on {alert.version}: {alert.metric}"
        body = f"{alert.message}\n\nMonitoring: {_link(f'/models/{alert.model.name}/monitoring/')}"
    elif kind == NotificationKind.RECERTIFICATION_DUE:
        version = context["version"]
        subject = f"[Glassbox] {version} is due for re-certification by {version.recertify_by.isoformat()}"
        body = (
            f"The approval of {version} holds until {version.recertify_by.isoformat()}. "
            f"Open a re-certification review before then.\n\nThe version: {_link(version.get_absolute_url())}"
        )
    else:
        raise ValueError(f"no message for notification kind {kind!r}")
    return subject, body + _footer()
