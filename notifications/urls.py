"""Routes of notifications and webhooks: the webhook API and the profile page."""

from django.urls import path

from notifications import apis, views

api_urlpatterns: list = [
    path("webhooks/", apis.WebhookListCreateApi.as_view(), name="webhooks"),
    path("webhooks/<int:pk>/", apis.WebhookDetailApi.as_view(), name="webhook"),
    path("webhooks/<int:pk>/deliveries/", apis.WebhookDeliveryListApi.as_view(), name="deliveries"),
]

urlpatterns: list = [
    path("account/notifications/", views.notification_preferences, name="preferences"),
]
