"""Read-only admin page for explanation reports (support staff)."""

from django.contrib import admin

from explanations.models import ExplanationReport
from glassbox.readonly_admin import ReadOnlyAdmin


@admin.register(ExplanationReport)
class ExplanationReportAdmin(ReadOnlyAdmin):
    list_display = ("id", "version", "method", "status", "progress", "requested_by", "created_at", "finished_at")
    list_filter = ("status", "method")
    search_fields = ("version__model__name", "error")
    list_select_related = ("version__model", "requested_by")
    ordering = ("-id",)
