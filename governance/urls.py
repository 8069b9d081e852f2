from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from governance import apis as governance_apis
from governance import views as governance_views
from registry import urls as registry_urls

api_v1 = [
    path("auth/token/", governance_apis.AuthTokenApi.as_view(), name="auth-token"),
    path("", include((registry_urls.api_urlpatterns, "registry-api"))),
]

urlpatterns = [
    path("", governance_views.home, name="home"),
    path("healthz", governance_views.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(template_name="governance/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include((registry_urls.urlpatterns, "registry"))),
]
