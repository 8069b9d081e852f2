from django.urls import path

from explanations import apis, views

_version = "models/<str:name>/versions/<int:number>"

# Pages (namespace "explanations").
urlpatterns = [
    path(f"{_version}/explanations/new/", views.report_new, name="new"),
    path("explanations/<int:pk>/", views.report_detail, name="detail"),
    path("explanations/<int:pk>/cancel/", views.report_cancel, name="cancel"),
    path("models/<str:name>/explanations/compare/", views.version_compare, name="compare"),
]

# REST API under /api/v1/ (namespace "explanations-api"); these paths are the stable contract.
api_urlpatterns = [
    path(f"{_version}/explanations/", apis.ReportListCreateApi.as_view(), name="reports"),
    path(f"{_version}/explanations/estimate/", apis.ReportEstimateApi.as_view(), name="estimate"),
    path("explanations/<int:pk>/", apis.ReportDetailApi.as_view(), name="report"),
    path("explanations/<int:pk>/cancel/", apis.ReportCancelApi.as_view(), name="cancel"),
    path("explanations/<int:pk>/export.json", apis.ReportExportJsonApi.as_view(), name="export-json"),
    path("explanations/<int:pk>/export.csv", apis.ReportExportCsvApi.as_view(), name="export-csv"),
    path("explanations/<int:pk>/export-global.csv", apis.ReportExportGlobalCsvApi.as_view(), name="export-global-csv"),
]
