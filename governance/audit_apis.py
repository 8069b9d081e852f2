"""GET /api/v1/audit/events/: the audit trail with the page's filters,
keyset-paginated (`next` = older events, `previous` = newer)."""

from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from glassbox.errors import InvalidInput
from governance import audit_selectors as selectors
from governance.audit import event_timestamp

_PARAMETERS = [
    OpenApiParameter("actor", str, description="username of whoever acted (as recorded)"),
    OpenApiParameter("action", str, description="e.g. version.create, review.decide, auth.login"),
    OpenApiParameter("model", str, description="model name"),
    OpenApiParameter("version", int, description="version number (needs model)"),
    OpenApiParameter("outcome", str, enum=["ok", "denied"]),
    # A date (YYYY-MM-DD) is accepted as well as a date and time: a string, not `date-time`.
    OpenApiParameter("from", str, description="from this date (whole day) or UTC time, inclusive"),
    OpenApiParameter("to", str, description="up to this date (whole day) or UTC time, inclusive"),
    OpenApiParameter("before", int, description="events older than this id (the `next` link sets it)"),
    OpenApiParameter("after", int, description="events newer than this id; after=0 is the oldest page"),
    OpenApiParameter(
        "limit", int, description=f"page size, 1-{selectors.MAX_PAGE_SIZE} (default {selectors.DEFAULT_PAGE_SIZE})"
    ),
]


class AuditEventOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.SerializerMethodField(help_text="UTC, exactly as hashed")
    actor_id = serializers.IntegerField(allow_null=True)
    actor_username = serializers.CharField()
    action = serializers.CharField()
    outcome = serializers.CharField()
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    object_label = serializers.CharField()
    model_name = serializers.CharField()
    version_number = serializers.IntegerField(allow_null=True)
    changes = serializers.JSONField()
    detail = serializers.JSONField()
    request_id = serializers.CharField()
    ip = serializers.CharField()
    user_agent = serializers.CharField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()

    def get_created_at(self, event) -> str:
        return event_timestamp(event.created_at)


# At module level: the schema needs a component name no other API uses.
class AuditEventPageOutputSerializer(serializers.Serializer):
    results = AuditEventOutputSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="older events")
    previous = serializers.URLField(allow_null=True, help_text="newer events")


class AuditEventListApi(APIView):
    OutputSerializer = AuditEventPageOutputSerializer

    @extend_schema(parameters=_PARAMETERS, responses=OutputSerializer, operation_id="audit_events_list")
    def get(self, request):
        selectors.require_audit_read(request.user)
        # The page's form sends empty fields, which its parser reads as "no
        # filter"; an API caller who sends `?to=` made a mistake: say so.
        empty = [
            name
            for name in (*selectors.FILTER_PARAMS, "before", "after", "limit")
            if name in request.query_params and not request.query_params[name].strip()
        ]
        if empty:
            raise InvalidInput(f"Empty query parameter {', '.join(empty)}: leave it out or give a value.")
        query = selectors.audit_query_parse(request.query_params)
        cursor = selectors.audit_cursor_parse(request.query_params)
        page = selectors.audit_event_page(user=request.user, query=query, cursor=cursor)

        def link(**position: int) -> str:
            params = {**query.given, **position}
            if cursor.limit != selectors.DEFAULT_PAGE_SIZE:
                params["limit"] = cursor.limit
            return request.build_absolute_uri(f"{request.path}?{urlencode(params)}")

        return Response(
            {
                "results": AuditEventOutputSerializer(page.events, many=True).data,
                "next": link(before=page.older) if page.older is not None else None,
                "previous": link(after=page.newer) if page.newer is not None else None,
            }
        )
