from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Telling people and other systems what happened: e-mail notifications
    and signed webhooks, both fed by the audit trail (governance.audit)."""

    name = "notifications"
    verbose_name = "Notifications and webhooks"
