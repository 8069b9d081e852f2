"""Read-only admin pages for registered models and their versions (support staff)."""

from django.contrib import admin

from glassbox.readonly_admin import ReadOnlyAdmin
from registry.models import ModelVersion, RegisteredModel


@admin.register(RegisteredModel)
class RegisteredModelAdmin(ReadOnlyAdmin):
    list_display = ("name", "task", "risk_tier", "created_by", "created_at")
    list_filter = ("risk_tier", "task")
    search_fields = ("name", "description")
    list_select_related = ("created_by",)
    ordering = ("name",)


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("model", "number", "status", "flavor", "short_sha256", "created_by", "created_at", "recertify_by")
    list_filter = ("status", "flavor", "model__risk_tier")
    search_fields = ("model__name", "=artifact_sha256")
    list_select_related = ("model", "created_by")
    ordering = ("model__name", "-number")

    @admin.display(description="artifact SHA-256", ordering="artifact_sha256")
    def short_sha256(self, version: ModelVersion) -> str:
        return version.artifact_sha256[:12]
