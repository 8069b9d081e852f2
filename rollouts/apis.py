"""REST API of rollouts: start and list a model's rollouts, read one and its
analysis runs, the manual gates (promote: to the end, or one step) and a
model's rollback. One view per operation with its input
and output serializers, no rules and no queries here (services and
selectors hold them)."""

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from glassbox.idempotency import IDEMPOTENCY_PARAMETER, idempotent
from glassbox.pagination import CursorPage, paginated_response
from registry import selectors as registry_selectors
from rollouts import selectors, services
from rollouts.models import AnalysisRun, Rollout

# Runs shown inline with a rollout; the full list is under .../analysis/.
LATEST_RUNS = 5


class AnalysisRunOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = AnalysisRun
        ref_name = "RolloutAnalysisRun"
        fields = ("id", "step_index", "window_start", "window_end", "measurements", "verdict", "action", "created_at")


class RolloutOutputSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    candidate = serializers.IntegerField(source="candidate.number")
    stable = serializers.IntegerField(source="stable.number", allow_null=True, default=None)
    candidate_weight = serializers.IntegerField()
    shadow = serializers.BooleanField(source="is_shadowing")
    interval = serializers.IntegerField(source="analysis_interval_seconds")
    created_by = serializers.CharField(source="created_by.username")
    rolled_back_by = serializers.CharField(source="rolled_back_by.username", allow_null=True, default=None)
    url = serializers.SerializerMethodField()
    page = serializers.SerializerMethodField()
    analysis = serializers.SerializerMethodField()

    class Meta:
        model = Rollout
        ref_name = "Rollout"
        fields = (
            "id",
            "model",
            "candidate",
            "stable",
            "status",
            "status_reason",
            "steps",
            "current_step",
            "step_started_at",
            "candidate_weight",
            "shadow",
            "thresholds",
            "interval",
            "failures",
            "last_analysis_at",
            "created_by",
            "created_at",
            "finished_at",
            "rolled_back_at",
            "rolled_back_by",
            "rollback_reason",
            "url",
            "page",
            "analysis",
        )

    def get_url(self, rollout: Rollout) -> str:
        return f"/api/v1/rollouts/{rollout.pk}/"

    def get_page(self, rollout: Rollout) -> str:
        return rollout.get_absolute_url()

    @extend_schema_field(AnalysisRunOutputSerializer(many=True))
    def get_analysis(self, rollout: Rollout) -> list[dict]:
        # Fetched with the rollouts (selectors, latest_runs=LATEST_RUNS): no query per row.
        return AnalysisRunOutputSerializer(rollout.latest_runs, many=True).data


class RolloutStartInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "RolloutStartRequest"

    candidate = serializers.IntegerField(min_value=1, help_text="the version number to roll out (approved)")
    # Steps and thresholds are checked by the service, which names the bad step.
    steps = serializers.JSONField(
        required=False, allow_null=True, help_text='[{"weight": 0-100, "shadow": bool, "bake_seconds": n}, ...]'
    )
    thresholds = serializers.JSONField(required=False, allow_null=True, help_text="overrides of the defaults")
    analysis_interval_seconds = serializers.IntegerField(required=False, allow_null=True)
    reference_dataset = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="dataset id to measure input drift against"
    )


class RolloutActionInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "RolloutActionRequest"

    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class RolloutPromoteInputSerializer(RolloutActionInputSerializer):
    class Meta:
        ref_name = "RolloutPromoteRequest"

    step = serializers.ChoiceField(
        choices=["next"],
        required=False,
        allow_null=True,
        default=None,
        help_text='"next": move to the next step only (the promotion itself at the last step); '
        "left out: skip to the end and promote",
    )


class ServingStateOutputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "ServingState"

    model = serializers.CharField()
    stable = serializers.IntegerField(allow_null=True, help_text="version number serving all traffic not in a rollout")
    previous = serializers.IntegerField(allow_null=True, help_text="deployed version kept loaded for a rollback")
    previous_retire_at = serializers.DateTimeField(allow_null=True)
    active_rollout = serializers.IntegerField(allow_null=True)


class RollbackInputSerializer(serializers.Serializer):
    class Meta:
        ref_name = "RollbackRequest"

    # Required and checked by the service (it records a refusal without one).
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, default="", help_text="why (required)"
    )


class RolloutListCreateApi(APIView):
    pagination_class = CursorPage
    InputSerializer = RolloutStartInputSerializer

    @extend_schema(responses=RolloutOutputSerializer(many=True), operation_id="rollouts_list")
    def get(self, request, name: str):
        model = registry_selectors.model_get(user=request.user, name=name)
        rollouts = selectors.rollout_list(user=request.user, model=model, latest_runs=LATEST_RUNS)
        return paginated_response(
            request, rollouts, RolloutOutputSerializer, ordering=("-created_at", "-id"), view=self
        )

    @extend_schema(
        request=InputSerializer,
        responses={201: RolloutOutputSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="rollouts_create",
    )
    @idempotent
    def post(self, request, name: str):
        model = registry_selectors.model_get(user=request.user, name=name)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        candidate = registry_selectors.version_get(user=request.user, name=name, number=values["candidate"])
        dataset = None
        if values.get("reference_dataset") is not None:
            dataset = registry_selectors.dataset_get(
                user=request.user, pk=values["reference_dataset"], referenced="reference_dataset"
            )
        rollout = services.rollout_start(
            actor=request.user,
            model=model,
            candidate=candidate,
            steps=values.get("steps"),
            thresholds=values.get("thresholds"),
            analysis_interval_seconds=values.get("analysis_interval_seconds"),
            reference_dataset=dataset,
        )
        rollout = selectors.rollout_get(user=request.user, pk=rollout.pk, latest_runs=LATEST_RUNS)
        return Response(RolloutOutputSerializer(rollout).data, status=status.HTTP_201_CREATED)


class RolloutDetailApi(APIView):
    @extend_schema(responses=RolloutOutputSerializer, operation_id="rollouts_retrieve")
    def get(self, request, pk: int):
        rollout = selectors.rollout_get(user=request.user, pk=pk, latest_runs=LATEST_RUNS)
        return Response(RolloutOutputSerializer(rollout).data)


class RolloutAnalysisListApi(APIView):
    pagination_class = CursorPage

    @extend_schema(responses=AnalysisRunOutputSerializer(many=True), operation_id="rollouts_analysis_list")
    def get(self, request, pk: int):
        rollout = selectors.rollout_get(user=request.user, pk=pk)
        runs = selectors.analysis_runs(user=request.user, rollout=rollout)
        return paginated_response(
            request, runs, AnalysisRunOutputSerializer, ordering=("-window_end", "-id"), view=self
        )


class _RolloutActionApi(APIView):
    InputSerializer = RolloutActionInputSerializer

    def act(self, request, rollout: Rollout, reason: str) -> Rollout:
        raise NotImplementedError

    def post(self, request, pk: int):
        rollout = selectors.rollout_get(user=request.user, pk=pk)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        self.act(request, rollout, data.validated_data.get("reason", ""))
        rollout = selectors.rollout_get(user=request.user, pk=pk, latest_runs=LATEST_RUNS)
        return Response(RolloutOutputSerializer(rollout).data)


class RolloutPromoteApi(_RolloutActionApi):
    InputSerializer = RolloutPromoteInputSerializer

    @extend_schema(
        request=RolloutPromoteInputSerializer, responses=RolloutOutputSerializer, operation_id="rollouts_promote"
    )
    def post(self, request, pk: int):
        rollout = selectors.rollout_get(user=request.user, pk=pk)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values.get("step") == "next":
            services.rollout_promote_step(actor=request.user, rollout=rollout, reason=values["reason"])
        else:
            services.rollout_promote(actor=request.user, rollout=rollout, reason=values["reason"])
        rollout = selectors.rollout_get(user=request.user, pk=pk, latest_runs=LATEST_RUNS)
        return Response(RolloutOutputSerializer(rollout).data)


class RolloutPauseApi(_RolloutActionApi):
    @extend_schema(
        request=RolloutActionInputSerializer, responses=RolloutOutputSerializer, operation_id="rollouts_pause"
    )
    def post(self, request, pk: int):
        return super().post(request, pk)

    def act(self, request, rollout, reason):
        return services.rollout_pause(actor=request.user, rollout=rollout, reason=reason)


class RolloutResumeApi(_RolloutActionApi):
    @extend_schema(
        request=RolloutActionInputSerializer, responses=RolloutOutputSerializer, operation_id="rollouts_resume"
    )
    def post(self, request, pk: int):
        return super().post(request, pk)

    def act(self, request, rollout, reason):
        return services.rollout_resume(actor=request.user, rollout=rollout)


class RolloutAbortApi(_RolloutActionApi):
    @extend_schema(
        request=RolloutActionInputSerializer, responses=RolloutOutputSerializer, operation_id="rollouts_abort"
    )
    def post(self, request, pk: int):
        return super().post(request, pk)

    def act(self, request, rollout, reason):
        return services.rollout_abort(actor=request.user, rollout=rollout, reason=reason)


class ModelRollbackApi(APIView):
    InputSerializer = RollbackInputSerializer

    @extend_schema(
        request=RollbackInputSerializer, responses=ServingStateOutputSerializer, operation_id="models_rollback"
    )
    def post(self, request, name: str):
        model = registry_selectors.model_get(user=request.user, name=name)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.serving_rollback(actor=request.user, model=model, reason=data.validated_data["reason"])
        return Response(ServingStateOutputSerializer(selectors.serving_get(user=request.user, model=model)).data)
