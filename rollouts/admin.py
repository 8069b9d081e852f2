"""Read-only admin page for rollouts (support staff)."""

from django.contrib import admin

from glassbox.readonly_admin import ReadOnlyAdmin
from rollouts.models import Rollout


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyAdmin):
    list_display = ("id", "model", "candidate", "stable", "status", "current_step", "created_by", "created_at")
    list_filter = ("status",)
    search_fields = ("model__name", "status_reason")
    list_select_related = ("model", "candidate__model", "stable__model", "created_by")
    ordering = ("-id",)
