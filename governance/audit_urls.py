from django.urls import path

from governance import audit_apis, audit_views

# Pages (namespace "audit").
urlpatterns = [
    path("audit/", audit_views.audit_trail, name="trail"),
    path("audit/export.csv", audit_views.audit_export_csv, name="export-csv"),
    path("audit/export.json", audit_views.audit_export_json, name="export-json"),
]

# REST API under /api/v1/ (namespace "audit-api").
api_urlpatterns = [
    path("audit/events/", audit_apis.AuditEventListApi.as_view(), name="events"),
]
