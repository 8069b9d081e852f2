"""Routes of the rollouts app: the serving API (predict, feedback), the
rollout API and its manual gates, and the pages (rollouts, monitoring).
`/metrics` (Prometheus) is mounted at the root by governance/urls.py."""

from django.urls import path  # noqa: F401  (used by the sections below)

# --- serving API: predict and feedback (rollouts/serving_apis.py) -------------
serving_api_urlpatterns: list = []

# --- rollout API: list/start and the manual gates (rollouts/apis.py) ----------
rollout_api_urlpatterns: list = []

api_urlpatterns = serving_api_urlpatterns + rollout_api_urlpatterns

# --- pages: rollout pages and monitoring (rollouts/views.py) ------------------
urlpatterns: list = []
