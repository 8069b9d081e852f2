from django.urls import path

from registry import apis, views

# Pages (namespace "registry").
urlpatterns = [
    path("models/", views.model_list, name="model-list"),
    path("models/<str:name>/", views.model_detail, name="model-detail"),
    path("models/<str:name>/upload/", views.version_upload, name="version-upload"),
    path("models/<str:name>/input-redaction/", views.model_input_redaction, name="model-input-redaction"),
    path("models/<str:name>/versions/<int:number>/", views.version_detail, name="version-detail"),
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/<int:pk>/", views.dataset_detail, name="dataset-detail"),
]

# REST API under /api/v1/ (namespace "registry-api"); these paths are the stable contract.
api_urlpatterns = [
    path("models/", apis.ModelListCreateApi.as_view(), name="models"),
    path("models/<str:name>/", apis.ModelDetailApi.as_view(), name="model"),
    path("models/<str:name>/input-redaction/", apis.ModelInputRedactionApi.as_view(), name="model-input-redaction"),
    path("models/<str:name>/archive/", apis.ModelArchiveApi.as_view(), name="model-archive"),
    path("models/<str:name>/unarchive/", apis.ModelUnarchiveApi.as_view(), name="model-unarchive"),
    path("models/<str:name>/versions/", apis.VersionListCreateApi.as_view(), name="versions"),
    path("models/<str:name>/versions/<int:number>/", apis.VersionDetailApi.as_view(), name="version"),
    path("datasets/", apis.DatasetListCreateApi.as_view(), name="datasets"),
]
