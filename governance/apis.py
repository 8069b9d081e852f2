from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from glassbox.errors import GlassboxError, NotFound
from glassbox.pagination import CursorPage, paginated_response
from governance import accounts, selectors, services, signin
from governance.audit_actions import AuditAction
from governance.models import ApiToken, Decision, ReviewRequest
from governance.selectors import review_latest
from registry import selectors as registry_selectors
from registry.models import ModelVersion


class InvalidCredentials(GlassboxError):
    status_code = 400
    default_code = "invalid_credentials"


class AuthTokenApi(APIView):
    """Exchange a username and password for the user's API token."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "TokenRequest"  # a unique OpenAPI component name

        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=4096, trim_whitespace=False)

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer("TokenOutput", {"token": serializers.CharField()}),
        operation_id="auth_token_create",
        description="Exchange a username and password for a full-access key. Each call creates a new token named "
        "`password sign-in` (keys are stored hashed: an earlier one cannot be handed out again), listed and revocable "
        "under /api/v1/auth/tokens/ and bounded by GLASSBOX_TOKEN_MAX_DAYS. Scripts should create one named token "
        "instead and keep its key.",
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        signin.local_signin_check()
        signin.signin_check(request._request, data.validated_data["username"])
        user = authenticate(request=request._request, **data.validated_data)
        if user is None or not user.is_active:
            signin.signin_failed(request._request, data.validated_data["username"])
            raise InvalidCredentials("Unable to log in with the given username and password.")
        _, key = accounts.token_issue(actor=user)
        return Response({"token": key})


class ApiTokenOutputSerializer(serializers.ModelSerializer):
    models = serializers.ListField(source="model_names", child=serializers.CharField())
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiToken.Scope.choices))
    revoked = serializers.SerializerMethodField()
    user = serializers.CharField(source="user.username", help_text="whose token it is")

    class Meta:
        model = ApiToken
        ref_name = "ApiToken"
        fields = [
            "id",
            "user",
            "name",
            "prefix",
            "scopes",
            "models",
            "expires_at",
            "last_used_at",
            "created_at",
            "revoked_at",
            "revoked",
        ]

    def get_revoked(self, token) -> bool:
        return token.revoked_at is not None


class ApiTokenListCreateApi(APIView):
    """Your API tokens: list them (never their keys), create one (its key is
    in this answer only)."""

    # JSON only: lists of scopes and models have no plain form encoding.
    parser_classes = [JSONParser]
    pagination_class = CursorPage

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ApiTokenInput"

        name = serializers.CharField(max_length=100)
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=ApiToken.Scope.choices),
            required=False,
            default=list,
            help_text="empty: the token acts with all your permissions",
        )
        models = serializers.ListField(
            child=serializers.CharField(max_length=100),
            required=False,
            default=list,
            help_text="the models a scoped token may be used on",
        )
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    class CreatedSerializer(ApiTokenOutputSerializer):
        key = serializers.SerializerMethodField(help_text="shown once: store it now")

        class Meta(ApiTokenOutputSerializer.Meta):
            ref_name = "ApiTokenCreated"
            fields = [*ApiTokenOutputSerializer.Meta.fields, "key"]

        def get_key(self, token) -> str:
            return self.context["key"]

    @extend_schema(
        responses=ApiTokenOutputSerializer(many=True),
        parameters=[OpenApiParameter("user", str, description="another user's tokens (admins only)")],
        operation_id="auth_tokens_list",
        description="Your API tokens (never their keys), newest first, revoked ones included.",
    )
    def get(self, request):
        tokens = selectors.api_tokens_listed(viewer=request.user, username=request.query_params.get("user"))
        return paginated_response(request, tokens, ApiTokenOutputSerializer, ordering=("-created_at", "-id"), view=self)

    @extend_schema(
        request={"application/json": InputSerializer},
        responses={201: CreatedSerializer},
        operation_id="auth_tokens_create",
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, key = accounts.token_create(
            actor=request.user,
            name=data.validated_data["name"],
            scopes=data.validated_data["scopes"],
            model_names=data.validated_data["models"],
            expires_at=data.validated_data["expires_at"],
        )
        return Response(self.CreatedSerializer(token, context={"key": key}).data, status=status.HTTP_201_CREATED)


class ApiTokenRevokeApi(APIView):
    """Revoke one of your tokens; it stops working at once (serving
    processes: within a second)."""

    @extend_schema(responses={204: None}, operation_id="auth_tokens_revoke")
    def delete(self, request, pk: int):
        token = selectors.api_token_of(request.user, pk)
        if token is None:
            raise NotFound("No such token.")
        accounts.token_revoke(actor=request.user, token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DecisionOutputSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.username")

    class Meta:
        model = Decision
        fields = ["id", "reviewer", "decision", "comment", "created_at", "evidence"]


class ReviewOutputSerializer(serializers.ModelSerializer):
    """The `review` block of a version: where its latest review stands."""

    opened_by = serializers.CharField(source="opened_by.username")
    approvals = serializers.SerializerMethodField()
    missing_evidence = serializers.SerializerMethodField()
    decisions = DecisionOutputSerializer(many=True)

    class Meta:
        model = ReviewRequest
        fields = [
            "id",
            "kind",
            "status",
            "opened_by",
            "opened_at",
            "closed_at",
            "approvals",
            "required_approvals",
            "required_evidence",
            "fresh_evidence_since",
            "require_opened_evidence",
            "missing_evidence",
            "decisions",
        ]

    @extend_schema_field(serializers.IntegerField())
    def get_approvals(self, review: ReviewRequest) -> int:
        return len(review.approvals())

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_missing_evidence(self, review: ReviewRequest) -> list[str]:
        # Evidence only matters while someone can still approve.
        return review.missing_evidence() if review.status == ReviewRequest.Status.OPEN else []


class ReviewStateOutputSerializer(serializers.Serializer):
    """A version's state after a review write, with its review."""

    model = serializers.CharField(source="model.name")
    version = serializers.IntegerField(source="number")
    status = serializers.CharField()
    recertify_by = serializers.DateField(allow_null=True)
    review = serializers.SerializerMethodField()

    @extend_schema_field(ReviewOutputSerializer(allow_null=True))
    def get_review(self, version: ModelVersion) -> dict | None:
        review = review_latest(version)
        return ReviewOutputSerializer(review).data if review is not None else None


class ReviewSubmitApi(APIView):
    """Open a review of a registered version (the uploader or any engineer)."""

    @extend_schema(request=None, responses={201: ReviewStateOutputSerializer}, operation_id="versions_submit")
    def post(self, request, name: str, number: int):
        version = services.review_target_get(
            actor=request.user, name=name, number=number, action=AuditAction.REVIEW_SUBMIT
        )
        services.review_submit(actor=request.user, version=version)
        version = registry_selectors.version_get(user=request.user, name=name, number=number)
        return Response(ReviewStateOutputSerializer(version).data, status=status.HTTP_201_CREATED)


class RecertifyApi(APIView):
    """Open a re-certification round of an approved or deployed version (its
    engineers). The version keeps its status, and keeps serving, meanwhile."""

    @extend_schema(request=None, responses={201: ReviewStateOutputSerializer}, operation_id="versions_recertify")
    def post(self, request, name: str, number: int):
        version = services.review_target_get(
            actor=request.user, name=name, number=number, action=AuditAction.VERSION_RECERTIFY_REQUEST
        )
        services.review_recertify(actor=request.user, version=version)
        version = registry_selectors.version_get(user=request.user, name=name, number=number)
        return Response(ReviewStateOutputSerializer(version).data, status=status.HTTP_201_CREATED)


class DecisionListCreateApi(APIView):
    pagination_class = CursorPage

    class InputSerializer(serializers.Serializer):
        # Lenient on purpose: an unknown word, a missing comment or an overlong
        # one are the service's to refuse, so that the refusal is recorded.
        decision = serializers.CharField(required=False, allow_blank=True, default="", help_text="approve or reject")
        comment = serializers.CharField(
            required=False, allow_blank=True, default="", trim_whitespace=False, help_text="why; required to reject"
        )

        class Meta:
            ref_name = "DecisionInput"  # nested InputSerializers would share one schema name

    class OutputSerializer(DecisionOutputSerializer):
        version_status = serializers.CharField(source="review.version.status")

        class Meta(DecisionOutputSerializer.Meta):
            fields = DecisionOutputSerializer.Meta.fields + ["version_status"]
            ref_name = "DecisionRecorded"

    @extend_schema(responses=DecisionOutputSerializer(many=True), operation_id="versions_decisions_list")
    def get(self, request, name: str, number: int):
        version = registry_selectors.version_get(user=request.user, name=name, number=number)
        decisions = selectors.decision_list(user=request.user, version=version)
        return paginated_response(
            request, decisions, DecisionOutputSerializer, ordering=("created_at", "id"), view=self
        )

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, operation_id="versions_decisions_create")
    def post(self, request, name: str, number: int):
        version = services.review_target_get(
            actor=request.user, name=name, number=number, action=AuditAction.REVIEW_DECIDE
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        decision = services.decision_record(actor=request.user, version=version, **data.validated_data)
        return Response(self.OutputSerializer(decision).data, status=status.HTTP_201_CREATED)
