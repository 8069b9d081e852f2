"""REST API of the registry: one view per operation, nested serializers,
no rules here (services and selectors hold them)."""

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from glassbox.errors import TooLarge
from glassbox.idempotency import IDEMPOTENCY_PARAMETER, idempotent
from glassbox.pagination import CursorPage, paginated_response
from governance import team_services
from governance.apis import ReviewOutputSerializer
from governance.selectors import review_latest
from registry import selectors, services
from registry.models import UPLOAD_FLAVOR_CHOICES, ModelVersion, RegisteredModel
from registry.uploads import UploadedArtifact, check_upload_not_truncated, install_hashing_upload_handler


class VersionOutputSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    version = serializers.IntegerField(source="number")
    sha256 = serializers.CharField(source="artifact_sha256")
    size = serializers.IntegerField(source="artifact_size")
    filename = serializers.CharField(source="artifact_filename")
    card = serializers.DictField(child=serializers.CharField(allow_blank=True))
    created_by = serializers.CharField(source="created_by.username")
    url = serializers.SerializerMethodField()
    review = serializers.SerializerMethodField()
    mlflow = serializers.SerializerMethodField(
        help_text="for an MLflow model directory, what its MLmodel said: signature, run_id, utc_time_created, "
        "mlflow_version, model_uuid, metadata; null otherwise"
    )

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "version",
            "status",
            "flavor",
            "sha256",
            "size",
            "filename",
            "artifact_format",
            "labels",
            "max_length",
            "metrics",
            "card",
            "files",
            "created_by",
            "created_at",
            "url",
            "recertify_by",
            "inference_backend",
            "inference_backend_reason",
            "review",
            "mlflow",
        ]

    def get_url(self, version: ModelVersion) -> str:
        return f"/api/v1/models/{version.model.name}/versions/{version.number}/"

    @extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True})
    def get_mlflow(self, version: ModelVersion) -> dict | None:
        return version.mlflow_model or None

    @extend_schema_field(ReviewOutputSerializer(allow_null=True))
    def get_review(self, version: ModelVersion) -> dict | None:
        review = review_latest(version)
        return ReviewOutputSerializer(review).data if review is not None else None


class StrictCharField(serializers.CharField):
    """Text that must arrive as a JSON string: DRF's CharField would turn 0
    or true into "0" / "True", accepting a body the schema says is wrong."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ModelOutputSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username")
    team = serializers.CharField(source="team.name")
    input_redaction = serializers.BooleanField(
        source="redact_inputs", help_text="whether personal data in stored prediction inputs is redacted"
    )
    archived = serializers.BooleanField(source="is_archived", help_text="archived: serves nothing, takes nothing new")

    class Meta:
        model = RegisteredModel
        fields = [
            "name",
            "task",
            "risk_tier",
            "description",
            "team",
            "input_redaction",
            "created_by",
            "created_at",
            "archived",
            "archived_at",
        ]


class ModelDetailOutputSerializer(ModelOutputSerializer):
    versions = VersionOutputSerializer(many=True, source="ordered_versions")

    class Meta(ModelOutputSerializer.Meta):
        fields = ModelOutputSerializer.Meta.fields + ["versions"]


class ModelListCreateApi(APIView):
    pagination_class = CursorPage

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ModelCreateRequest"  # a unique OpenAPI component name

        name = serializers.CharField(max_length=100)
        task = serializers.ChoiceField(
            choices=RegisteredModel.Task.choices, default=RegisteredModel.Task.TEXT_CLASSIFICATION
        )
        risk_tier = serializers.ChoiceField(choices=RegisteredModel.RiskTier.choices)
        description = serializers.CharField(max_length=10_000, allow_blank=True, required=False, default="")
        team = serializers.CharField(
            max_length=100,
            required=False,
            # A blank value is the field left out (a multipart form cannot omit it otherwise).
            allow_blank=True,
            help_text="the owning team; defaults to the caller's only team (400 team_required when they have several)",
        )

    @extend_schema(
        responses=ModelOutputSerializer(many=True),
        operation_id="models_list",
        description="The models the caller may read.",
    )
    def get(self, request):
        models = selectors.model_list(user=request.user)
        return paginated_response(request, models, ModelOutputSerializer, ordering="name", view=self)

    @extend_schema(request=InputSerializer, responses={201: ModelOutputSerializer}, operation_id="models_create")
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model = services.model_create(actor=request.user, **data.validated_data)
        return Response(ModelOutputSerializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetailApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ModelUpdateRequest"

        description = StrictCharField(
            max_length=10_000, required=False, allow_blank=True, help_text="the team's engineers and maintainers"
        )
        risk_tier = serializers.ChoiceField(
            choices=RegisteredModel.RiskTier.choices,
            required=False,
            help_text="admins; raising it opens a re-certification round of each approved or deployed version",
        )
        team = StrictCharField(max_length=100, required=False, help_text="move to another team: admins")

    @extend_schema(responses=ModelDetailOutputSerializer, operation_id="models_retrieve")
    def get(self, request, name: str):
        model = selectors.model_get(user=request.user, name=name)
        model.ordered_versions = selectors.version_list(user=request.user, model=model)
        return Response(ModelDetailOutputSerializer(model).data)

    @extend_schema(
        request=InputSerializer,
        responses=ModelOutputSerializer,
        operation_id="models_partial_update",
        description="Edit a model, audited with the old and new values: `description` (its team's engineers and "
        "maintainers), `risk_tier` (admins; raising it opens a re-certification round of each approved or deployed "
        "version, which keeps serving meanwhile), `team` (admins: move it to another team).",
    )
    def patch(self, request, name: str):
        model = selectors.model_get(user=request.user, name=name)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if "team" in values:
            model = team_services.model_team_move(actor=request.user, model=model, team_name=values["team"])
        if "description" in values or "risk_tier" in values or "team" not in values:
            model = services.model_update(
                actor=request.user,
                model=model,
                description=values.get("description"),
                risk_tier=values.get("risk_tier"),
            )
        return Response(ModelOutputSerializer(selectors.model_get(user=request.user, name=name)).data)


class _ModelArchiveApi(APIView):
    archive = True

    def post(self, request, name: str):
        model = selectors.model_get(user=request.user, name=name)
        if self.archive:
            services.model_archive(actor=request.user, model=model)
        else:
            services.model_unarchive(actor=request.user, model=model)
        return Response(ModelOutputSerializer(selectors.model_get(user=request.user, name=name)).data)


class ModelArchiveApi(_ModelArchiveApi):
    @extend_schema(
        request=None,
        responses=ModelOutputSerializer,
        operation_id="models_archive",
        description="Archive the model: it serves nothing (predict answers 409 model_archived) and takes no new "
        "versions, reviews or rollouts; its history stays readable. Refused (409 rollout_active) while a rollout "
        "is active. Audited; archiving an archived model changes nothing.",
    )
    def post(self, request, name: str):
        return super().post(request, name)


class ModelUnarchiveApi(_ModelArchiveApi):
    archive = False

    @extend_schema(
        request=None,
        responses=ModelOutputSerializer,
        operation_id="models_unarchive",
        description="Undo an archive: serving and the workflow resume as they were. Audited.",
    )
    def post(self, request, name: str):
        return super().post(request, name)


class InputRedactionOutputSerializer(serializers.Serializer):
    model = serializers.CharField(source="name")
    enabled = serializers.BooleanField(source="redact_inputs")


class ModelInputRedactionApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ModelInputRedactionRequest"

        enabled = serializers.BooleanField(help_text="true: redact personal data before inputs are stored (default)")

    @extend_schema(
        request={"application/json": InputSerializer},
        responses=InputRedactionOutputSerializer,
        operation_id="models_input_redaction_update",
        description="Turn the redaction of personal data in stored prediction inputs on or off: admins only, audited.",
    )
    def put(self, request, name: str):
        model = selectors.model_get(user=request.user, name=name)
        body = request.data if isinstance(request.data, dict) else {}
        # The service checks the caller first, then that `enabled` is a JSON boolean
        # (not "false" or 0: a value that reads as the opposite must not slip through).
        model = services.model_input_redaction_set(actor=request.user, model=model, enabled=body.get("enabled"))
        return Response(InputRedactionOutputSerializer(model).data)


class StreamingUploadMixin:
    """Installs the hashing upload handler before anything (authentication's
    CSRF check included) can read the body, so files stream to disk once."""

    def upload_limit(self) -> int:
        raise NotImplementedError

    def initialize_request(self, request, *args, **kwargs):
        if request.method == "POST":
            request.glassbox_upload_refusal = None
            try:
                install_hashing_upload_handler(request, max_bytes=self.upload_limit())
            except TooLarge as exc:
                # Raised from post(), where the API's error handling applies.
                request.glassbox_upload_refusal = exc
        return super().initialize_request(request, *args, **kwargs)

    def received_file(self, request, field: str):
        """Validate the input serializer; on any error remove the streamed file."""
        django_request = request._request
        if django_request.glassbox_upload_refusal is not None:
            raise django_request.glassbox_upload_refusal
        data = self.InputSerializer(data=request.data)
        check_upload_not_truncated(django_request, max_bytes=self.upload_limit())
        uploaded = request.data.get(field)
        try:
            data.is_valid(raise_exception=True)
        except Exception:
            if hasattr(uploaded, "temporary_file_path"):
                UploadedArtifact.from_uploaded_file(uploaded).discard()
            raise
        values = dict(data.validated_data)
        values.pop(field)
        return UploadedArtifact.from_uploaded_file(uploaded), values


class VersionListCreateApi(StreamingUploadMixin, APIView):
    # A file needs multipart: a urlencoded body can only be refused (415, not a 400 on `file`).
    parser_classes = [MultiPartParser]
    pagination_class = CursorPage

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "VersionUploadRequest"  # a unique OpenAPI component name

        artifact = serializers.FileField(
            help_text="zip / tar / tar.gz of a transformers model or of an MLflow model directory, or a .skops file"
        )
        flavor = serializers.ChoiceField(
            choices=UPLOAD_FLAVOR_CHOICES,
            help_text="mlflow: an MLflow model directory, its flavor read from MLmodel (transformers or sklearn)",
        )
        metrics = serializers.JSONField(required=False, binary=True, help_text='JSON object, e.g. {"accuracy": 0.9}')
        description = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
        intended_use = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
        limitations = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
        training_data = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
        evaluation_data = serializers.CharField(max_length=10_000, required=False, allow_blank=True)

    def upload_limit(self) -> int:
        return settings.GLASSBOX_UPLOAD_LIMITS["max_upload_bytes"]

    @extend_schema(responses=VersionOutputSerializer(many=True), operation_id="versions_list")
    def get(self, request, name: str):
        model = selectors.model_get(user=request.user, name=name)
        versions = selectors.version_list(user=request.user, model=model)
        return paginated_response(request, versions, VersionOutputSerializer, ordering="-number", view=self)

    @extend_schema(
        request=InputSerializer,
        responses={201: VersionOutputSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="versions_create",
    )
    @idempotent
    def post(self, request, name: str):
        model = selectors.model_get(user=request.user, name=name)
        # Refuse before a large body is read when the answer is already no.
        services.version_upload_precheck(actor=request.user, model=model)
        upload, values = self.received_file(request, "artifact")
        version = services.version_create(actor=request.user, model=model, upload=upload, **values)
        return Response(VersionOutputSerializer(version).data, status=status.HTTP_201_CREATED)


class VersionDetailApi(APIView):
    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "VersionCardUpdateRequest"

        description = StrictCharField(max_length=10_000, required=False, allow_blank=True)
        intended_use = StrictCharField(max_length=10_000, required=False, allow_blank=True)
        limitations = StrictCharField(max_length=10_000, required=False, allow_blank=True)
        training_data = StrictCharField(max_length=10_000, required=False, allow_blank=True)
        evaluation_data = StrictCharField(max_length=10_000, required=False, allow_blank=True)

    @extend_schema(responses=VersionOutputSerializer, operation_id="versions_retrieve")
    def get(self, request, name: str, number: int):
        version = selectors.version_get(user=request.user, name=name, number=number)
        return Response(VersionOutputSerializer(version).data)

    @extend_schema(
        request=InputSerializer,
        responses=VersionOutputSerializer,
        operation_id="versions_partial_update",
        description="Edit the version's model card while it is `registered` (409 version_not_editable after it is "
        "submitted). Audited with the old and new values.",
    )
    def patch(self, request, name: str, number: int):
        version = selectors.version_get(user=request.user, name=name, number=number)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.version_card_update(actor=request.user, version=version, **data.validated_data)
        return Response(
            VersionOutputSerializer(selectors.version_get(user=request.user, name=name, number=number)).data
        )


class DatasetOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    format = serializers.CharField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    row_count = serializers.IntegerField()
    labels = serializers.ListField(child=serializers.CharField())
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()


class DatasetListCreateApi(StreamingUploadMixin, APIView):
    # A file needs multipart: a urlencoded body can only be refused (415, not a 400 on `file`).
    parser_classes = [MultiPartParser]
    pagination_class = CursorPage

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DatasetUploadRequest"  # a unique OpenAPI component name

        file = serializers.FileField(help_text="CSV or JSON lines with the columns text and label (UTF-8)")
        name = serializers.CharField(max_length=100)
        description = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")

    def upload_limit(self) -> int:
        return settings.GLASSBOX_UPLOAD_LIMITS["max_dataset_bytes"]

    @extend_schema(responses=DatasetOutputSerializer(many=True), operation_id="datasets_list")
    def get(self, request):
        datasets = selectors.dataset_list(user=request.user)
        return paginated_response(
            request, datasets, DatasetOutputSerializer, ordering=("-created_at", "-id"), view=self
        )

    @extend_schema(
        request=InputSerializer,
        responses={201: DatasetOutputSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="datasets_create",
    )
    @idempotent
    def post(self, request):
        # Refuse before a large body is read when the answer is already no.
        services.dataset_upload_precheck(actor=request.user)
        upload, values = self.received_file(request, "file")
        dataset = services.dataset_create(actor=request.user, upload=upload, **values)
        return Response(DatasetOutputSerializer(dataset).data, status=status.HTTP_201_CREATED)
