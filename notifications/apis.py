"""REST API of webhook subscriptions and their delivery logs. One view per
operation with its serializers; rules live in services and permissions."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from glassbox.errors import InvalidInput
from governance.audit_actions import AuditAction
from notifications import events, selectors, services
from notifications.models import WebhookDelivery, WebhookSubscription
from registry import selectors as registry_selectors

MAX_PAGE_SIZE = 200


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


class WebhookPageOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "WebhookPage"

    results = WebhookOutputSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="the next page's URL, or null")


class DeliveryPageOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "WebhookDeliveryPage"

    results = DeliveryOutputSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="the next page's URL, or null")


def _page_args(request) -> tuple[int | None, int]:
    empty = [
        name for name in ("cursor", "page_size") if name in request.query_params and not request.query_params[name]
    ]
    if empty:
        # As the audit trail's list does: an empty value is a mistake, not "the default".
        raise InvalidInput(f"Empty query parameter {', '.join(empty)}: leave it out or give a value.")
    try:
        cursor = int(request.query_params["cursor"]) if "cursor" in request.query_params else None
        size = int(request.query_params.get("page_size", 50))
    except ValueError:
        raise InvalidInput("cursor and page_size must be whole numbers.") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidInput(f"page_size must be between 1 and {MAX_PAGE_SIZE}.")
    return cursor, size


def _page(request, rows: list, size: int, serializer) -> dict:
    more = len(rows) > size
    rows = rows[:size]
    next_link = None
    if more:
        next_link = request.build_absolute_uri(f"{request.path}?cursor={rows[-1].pk}&page_size={size}")
    return {"results": serializer(rows, many=True).data, "next": next_link}


class WebhookListCreateApi(APIView):
    InputSerializer = WebhookCreateInputSerializer

    @extend_schema(
        parameters=[OpenApiParameter("cursor", int), OpenApiParameter("page_size", int)],
        responses=WebhookPageOutputSerializer,
        operation_id="webhooks_list",
    )
    def get(self, request):
        services.webhooks_access(actor=request.user)
        cursor, size = _page_args(request)
        rows = selectors.webhook_list(user=request.user, before_id=cursor, limit=size + 1)
        return Response(_page(request, rows, size, WebhookOutputSerializer))

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
    @extend_schema(
        parameters=[OpenApiParameter("cursor", int), OpenApiParameter("page_size", int)],
        responses=DeliveryPageOutputSerializer,
        operation_id="webhooks_deliveries_list",
    )
    def get(self, request, pk: int):
        sub = services.webhook_get(user=request.user, pk=pk)
        cursor, size = _page_args(request)
        rows = selectors.delivery_list(subscription=sub, before_id=cursor, limit=size + 1)
        return Response(_page(request, rows, size, DeliveryOutputSerializer))
