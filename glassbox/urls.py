from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from explanations import urls as explanation_urls
from glassbox import views as platform_views
from governance import apis as governance_apis
from governance import audit_urls, identity, signin, team_urls
from governance import views as governance_views
from notifications import urls as notification_urls
from registry import urls as registry_urls
from rollouts import urls as rollout_urls
from rollouts.metrics import metrics_view

# The review workflow: pages (namespace "reviews") and REST (namespace "reviews-api").
_version = "models/<str:name>/versions/<int:number>"
review_pages = [
    path("reviews/", governance_views.review_queue, name="queue"),
    path("dashboard/", governance_views.dashboard, name="dashboard"),
    path(f"{_version}/submit/", governance_views.review_submit, name="submit"),
    path(f"{_version}/recertify/", governance_views.review_recertify, name="recertify"),
    path(f"{_version}/review/", governance_views.review_detail, name="detail"),
    path(f"{_version}/dossier/", governance_views.dossier, name="dossier"),
    path(f"{_version}/dossier.json", governance_views.dossier_json, name="dossier-json"),
]
review_api = [
    path(f"{_version}/submit/", governance_apis.ReviewSubmitApi.as_view(), name="submit"),
    path(f"{_version}/recertify/", governance_apis.RecertifyApi.as_view(), name="recertify"),
    path(f"{_version}/decisions/", governance_apis.DecisionListCreateApi.as_view(), name="decisions"),
]

api_v1 = [
    path("auth/token/", governance_apis.AuthTokenApi.as_view(), name="auth-token"),
    path("auth/tokens/", governance_apis.ApiTokenListCreateApi.as_view(), name="auth-tokens"),
    path("auth/tokens/<int:pk>/", governance_apis.ApiTokenRevokeApi.as_view(), name="auth-token-revoke"),
    path("", include((review_api, "reviews-api"))),
    path("", include((audit_urls.api_urlpatterns, "audit-api"))),
    path("", include((team_urls.api_urlpatterns, "teams-api"))),
    path("", include((registry_urls.api_urlpatterns, "registry-api"))),
    path("", include((explanation_urls.api_urlpatterns, "explanations-api"))),
    path("", include((rollout_urls.api_urlpatterns, "rollouts-api"))),
    path("", include((notification_urls.api_urlpatterns, "notifications-api"))),
]

# An unmatched path under /api/ answers JSON, like every API error.
handler404 = "glassbox.api_errors.not_found"

urlpatterns = [
    path("", platform_views.home, name="home"),
    path("livez", platform_views.livez, name="livez"),
    path("readyz", platform_views.readyz, name="readyz"),
    # The older name of the readiness probe, kept for existing load balancers.
    path("healthz", platform_views.readyz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("login/", signin.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/change/", signin.PasswordChangeView.as_view(), name="password_change"),
    path("password/change/done/", signin.PasswordChangeDoneView.as_view(), name="password_change_done"),
    # Sign-in through the identity provider (404 while none is configured).
    path("oidc/authenticate/", identity.OidcStartView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", identity.OidcCallbackView.as_view(), name="oidc_authentication_callback"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include((review_pages, "reviews"))),
    path("", include((audit_urls.urlpatterns, "audit"))),
    path("", include((registry_urls.urlpatterns, "registry"))),
    path("", include((explanation_urls.urlpatterns, "explanations"))),
    path("", include((rollout_urls.urlpatterns, "rollouts"))),
    path("", include((notification_urls.urlpatterns, "notifications"))),
]
