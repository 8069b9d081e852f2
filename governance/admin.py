"""The Django admin in the audit trail, and the trail's own read-only page.

Every change the admin makes writes a LogEntry inside the admin's own
transaction; each one is mirrored into the trail from there. The bulk
"delete selected" action is switched off, because its log entries are
bulk-created (no signal): deletions go through the per-object delete page.
The domain models' pages (this trail's among them) are read-only: see
glassbox.readonly_admin.
"""

from django.contrib import admin
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models.signals import post_save
from django.dispatch import receiver

from glassbox.readonly_admin import ReadOnlyAdmin
from governance.audit import record_event
from governance.audit_actions import AuditAction
from governance.models import AuditEvent

admin.site.disable_action("delete_selected")

_ACTIONS = {ADDITION: AuditAction.ADMIN_ADD, CHANGE: AuditAction.ADMIN_CHANGE, DELETION: AuditAction.ADMIN_DELETE}


@receiver(post_save, sender=LogEntry, dispatch_uid="glassbox-audit-admin-log")
def _mirror_admin_change(sender, instance: LogEntry, created: bool, **kwargs) -> None:
    if not created:
        return
    content_type = instance.content_type
    app_label, model = (content_type.app_label, content_type.model) if content_type else ("", "")
    # (API tokens have no admin pages: their keys are stored hashed, and they
    # are created and revoked through /api/v1/auth/tokens/, audited there.)
    object_id, label, detail = str(instance.object_id or ""), instance.object_repr, {}
    record_event(
        actor=instance.user,
        action=_ACTIONS.get(instance.action_flag, AuditAction.ADMIN_CHANGE),
        object_type=f"{app_label}.{model}" if content_type else "",
        object_id=object_id,
        object_label=label,
        detail={**detail, "change_message": instance.get_change_message()},
    )


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "actor_username", "action", "outcome", "object_label", "model_name")
    list_filter = ("outcome", "created_at")
    # Exact matches: they use the indexes of a table that grows to millions of rows.
    search_fields = ("=action", "=actor_username", "=model_name", "=hash", "=request_id")
    ordering = ("-id",)
