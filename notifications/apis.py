"""REST API of webhook subscriptions and their delivery logs. One view per
operation with its serializers; rules live in services and permissions."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from glassbox.pagination import CursorPage, paginated_response
from governance.audit_actions import AuditAction
from notifications import events, selectors, services
from notifications.models import WebhookDelivery, WebhookSubscription
from registry import selectors as registry_selectors


class WebhookOutputSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", allow_null=True, default=None)
    created_by = serializers.CharField(source="created_by.username")

    class Meta:
        model = WebhookSubscription
        ref_name = "Webhook"
        fields = ("id", "url", "events", "model", "created_by", "created_at")


class WebhookCreatedOutputSerializer(WebhookOutputSerializer):
    class Meta(WebhookOutputSerializer.Meta):
        ref_name = "WebhookCreated"
        fields = (*WebhookOutputSerializer.Meta.fields, "secret")


class WebhookCreateInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "WebhookCreateRequest"

    url = serializers.CharField(max_length=2000, help_text="http(s) URL of a public host")
    events = serializers.ListField(
        child=serializers.CharField(max_length=64),
        allow_empty=False,
        max_length=50,
        help_text=f"event types: {', '.join(events.EVENT_TYPES)}",
    )
    model = serializers.CharField(allow_null=True, max_length=100, help_text="a model's name, or null for every model")


class DeliveryOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        ref_name = "WebhookDelivery"
        fields = (
            "id",
            "event_type",
            "audit_event_id",
            "status",
            "attempts",
            "response_code",
            "latency_ms",
            "error",
            "created_at",
            "last_attempt_at",
            "next_attempt_at",
            "delivered_at",
        )


class WebhookListCreateApi(APIView):
    pagination_class = CursorPage
    InputSerializer = WebhookCreateInputSerializer

    @extend_schema(responses=WebhookOutputSerializer(many=True), operation_id="webhooks_list")
    def get(self, request):
        services.webhooks_access(actor=request.user)
        rows = selectors.webhook_list(user=request.user)
        return paginated_response(request, rows, WebhookOutputSerializer, ordering=("-id",), view=self)

    @extend_schema(
        request=InputSerializer, responses={201: WebhookCreatedOutputSerializer}, operation_id="webhooks_create"
    )
    def post(self, request):
        services.webhooks_access(actor=request.user, action=AuditAction.WEBHOOK_CREATE)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        model = None
        if values["model"] is not None:
            model = registry_selectors.model_get(user=request.user, name=values["model"])
        sub = services.webhook_create(actor=request.user, url=values["url"], event_types=values["events"], model=model)
        return Response(WebhookCreatedOutputSerializer(sub).data, status=status.HTTP_201_CREATED)


class WebhookDetailApi(APIView):
    @extend_schema(responses=WebhookOutputSerializer, operation_id="webhooks_retrieve")
    def get(self, request, pk: int):
        return Response(WebhookOutputSerializer(services.webhook_get(user=request.user, pk=pk)).data)

    @extend_schema(responses={204: None}, operation_id="webhooks_destroy")
    def delete(self, request, pk: int):
        services.webhooks_access(actor=request.user, action=AuditAction.WEBHOOK_DELETE)
        sub = services.webhook_get(user=request.user, pk=pk)
        services.webhook_delete(actor=request.user, subscription=sub)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryListApi(APIView):
    pagination_class = CursorPage

    @extend_schema(responses=DeliveryOutputSerializer(many=True), operation_id="webhooks_deliveries_list")
    def get(self, request, pk: int):
        sub = services.webhook_get(user=request.user, pk=pk)
        rows = selectors.delivery_list(subscription=sub)
        return paginated_response(request, rows, DeliveryOutputSerializer, ordering=("-id",), view=self)
