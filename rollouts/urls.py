"""Routes of the rollouts app: the serving API (predict, feedback), the
rollout API and its manual gates, and the pages (rollouts, monitoring).
`/metrics` (Prometheus) is mounted at the root by glassbox/urls.py."""

from django.urls import path

from rollouts import apis, serving_apis, views

# --- serving API: predict and feedback (rollouts/serving_apis.py) -------------

serving_api_urlpatterns: list = [
    path("models/<str:name>/predict/", serving_apis.PredictApi.as_view(), name="predict"),
    path("models/<str:name>/feedback/", serving_apis.FeedbackApi.as_view(), name="feedback"),
]

# --- rollout API: list/start and the manual gates (rollouts/apis.py) ----------
rollout_api_urlpatterns: list = [
    path("models/<str:name>/rollouts/", apis.RolloutListCreateApi.as_view(), name="rollouts"),
    path("rollouts/<int:pk>/", apis.RolloutDetailApi.as_view(), name="rollout"),
    path("rollouts/<int:pk>/analysis/", apis.RolloutAnalysisListApi.as_view(), name="analysis"),
    path("rollouts/<int:pk>/promote/", apis.RolloutPromoteApi.as_view(), name="promote"),
    path("rollouts/<int:pk>/pause/", apis.RolloutPauseApi.as_view(), name="pause"),
    path("rollouts/<int:pk>/resume/", apis.RolloutResumeApi.as_view(), name="resume"),
    path("rollouts/<int:pk>/abort/", apis.RolloutAbortApi.as_view(), name="abort"),
    path("models/<str:name>/rollback/", apis.ModelRollbackApi.as_view(), name="rollback"),
]

api_urlpatterns = serving_api_urlpatterns + rollout_api_urlpatterns

# --- pages: rollout pages and monitoring (rollouts/views.py) ------------------
urlpatterns: list = [
    path("models/<str:name>/rollouts/", views.rollout_list, name="rollout-list"),
    path("models/<str:name>/monitoring/", views.model_monitoring, name="monitoring"),
    # POST only, with a confirm box and a required reason.
    path("models/<str:name>/rollback/", views.model_rollback, name="rollback"),
    path("rollouts/<int:pk>/", views.rollout_detail, name="rollout-detail"),
    # promote | step | pause | resume | abort, POST only, with a confirm box.
    path("rollouts/<int:pk>/<str:action>/", views.rollout_action, name="rollout-action"),
]
