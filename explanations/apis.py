"""REST API of explanation reports: one view per operation, serializers at
module level (the schema needs distinct component names), no rules here
(services and selectors hold them)."""

import json

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from explanations import exports, selectors, services
from explanations.global_importance import view_params
from explanations.models import ExplanationReport
from glassbox.errors import Conflict, InvalidInput
from glassbox.idempotency import IDEMPOTENCY_PARAMETER, idempotent
from glassbox.pagination import CursorPage, paginated_response
from governance.services import report_open_record
from registry import selectors as registry_selectors


class ReportSummarySerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(read_only=True)
    url = serializers.SerializerMethodField()
    page = serializers.SerializerMethodField()
    model = serializers.CharField(source="version.model.name")
    version = serializers.IntegerField(source="version.number")
    dataset = serializers.IntegerField(source="dataset_id", allow_null=True)
    requested_by = serializers.CharField(source="requested_by.username")
    chunks = serializers.SerializerMethodField()
    remaining_seconds = serializers.SerializerMethodField(
        help_text="while queued or running: seconds left, from the pace so far (or the estimate before any progress)"
    )

    class Meta:
        model = ExplanationReport
        fields = [
            "id",
            "url",
            "page",
            "model",
            "version",
            "method",
            "dataset",
            "text_count",
            "status",
            "progress",
            "params",
            "error",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
            "chunks",
            "estimate",
            "remaining_seconds",
        ]

    def get_url(self, report: ExplanationReport) -> str:
        return f"/api/v1/explanations/{report.pk}/"

    def get_page(self, report: ExplanationReport) -> str:
        return report.get_absolute_url()

    def get_remaining_seconds(self, report: ExplanationReport) -> int | None:
        return report.remaining_seconds(timezone.now())

    def get_chunks(self, report: ExplanationReport) -> dict:
        total = getattr(report, "chunks_total", None)
        done = getattr(report, "chunks_done", None)
        if total is None:
            total = report.chunks.count()
            done = report.chunks.filter(status="done").count()
        return {"total": total, "done": done}


class ReportOutputSerializer(ReportSummarySerializer):
    class Meta(ReportSummarySerializer.Meta):
        fields = ReportSummarySerializer.Meta.fields + [
            "heartbeat_at",
            "timings",
            "results",
            "fidelity",
            "results_sha256",
            "fidelity_sha256",
        ]


class ReportRequestInputSerializer(serializers.Serializer):
    method = serializers.CharField(max_length=40, help_text="shap, lime, pfi or ig (transformers versions)")
    dataset = serializers.IntegerField(required=False, allow_null=True, min_value=1, help_text="a dataset id, or")
    texts = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        allow_null=True,
        allow_empty=True,
        help_text="texts to explain",
    )
    params = serializers.DictField(required=False, default=dict, help_text="method parameters; defaults if empty")
    sample = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text='{"n": texts, "seed": 0}: explain n texts of the dataset drawn at random, stratified by label',
    )


class ReportEstimateSerializer(serializers.Serializer):
    estimate = serializers.DictField(help_text="seconds, rows_per_second, model_rows, texts, basis")
    text_count = serializers.IntegerField()
    max_texts = serializers.IntegerField()


def _request_arguments(request, version) -> dict:
    data = ReportRequestInputSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    values = data.validated_data
    dataset = None
    if values.get("dataset") is not None:
        dataset = registry_selectors.dataset_get(user=request.user, pk=values["dataset"], referenced="dataset")
    return {
        "actor": request.user,
        "version": version,
        "method": values["method"],
        "dataset": dataset,
        "texts": values.get("texts"),
        "params": values.get("params") or {},
        "sample": values.get("sample"),
    }


class ReportListCreateApi(APIView):
    pagination_class = CursorPage
    # Named at module level: the schema needs one distinct component name per input.
    InputSerializer = ReportRequestInputSerializer

    @extend_schema(responses=ReportSummarySerializer(many=True), operation_id="explanations_list")
    def get(self, request, name: str, number: int):
        version = registry_selectors.version_get(user=request.user, name=name, number=number)
        reports = selectors.report_list(user=request.user, version=version)
        return paginated_response(request, reports, ReportSummarySerializer, ordering=("-created_at", "-id"), view=self)

    @extend_schema(
        request=InputSerializer,
        responses={202: ReportOutputSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="explanations_create",
    )
    @idempotent
    def post(self, request, name: str, number: int):
        version = registry_selectors.version_get(user=request.user, name=name, number=number)
        report = services.report_request(**_request_arguments(request, version))
        report = selectors.report_get(user=request.user, pk=report.pk)
        return Response(ReportOutputSerializer(report).data, status=status.HTTP_202_ACCEPTED)


class ReportEstimateApi(APIView):
    """What a report request would cost, checked as the request itself is, without queuing anything."""

    @extend_schema(
        request=ReportRequestInputSerializer,
        responses=ReportEstimateSerializer,
        operation_id="explanations_estimate",
    )
    def post(self, request, name: str, number: int):
        version = registry_selectors.version_get(user=request.user, name=name, number=number)
        plan = services.report_plan(**_request_arguments(request, version))
        body = {
            "estimate": plan.estimate,
            "text_count": plan.n_texts,
            "max_texts": settings.GLASSBOX_MAX_REPORT_TEXTS,
        }
        return Response(ReportEstimateSerializer(body).data)


class ReportDetailApi(APIView):
    @extend_schema(responses=ReportOutputSerializer, operation_id="explanations_retrieve")
    def get(self, request, pk: int):
        report = selectors.report_get(user=request.user, pk=pk)
        report_open_record(actor=request.user, report=report, via="api")
        return Response(ReportOutputSerializer(report).data)


class ReportCancelApi(APIView):
    @extend_schema(request=None, responses=ReportOutputSerializer, operation_id="explanations_cancel")
    def post(self, request, pk: int):
        report = selectors.report_get(user=request.user, pk=pk)
        services.report_cancel(actor=request.user, report=report)
        report = selectors.report_get(user=request.user, pk=pk)
        return Response(ReportOutputSerializer(report).data)


IMPORTANCE_PARAMETERS = [
    OpenApiParameter("unit", str, enum=["token", "word"], description="rank model tokens or jieba words"),
    OpenApiParameter("min_texts", int, description="texts a token must occur in to be ranked (1-1000, default 3)"),
]


class _ExportApi(APIView):
    def perform_content_negotiation(self, request, force=False):
        # The export is a file whatever the client says it accepts; errors stay JSON.
        return super().perform_content_negotiation(request, force=True)

    def succeeded_report(self, request, pk: int) -> ExplanationReport:
        report = selectors.report_get(user=request.user, pk=pk)
        if report.status != ExplanationReport.Status.SUCCEEDED:
            raise Conflict(
                f"Report {pk} is {report.status}; only a succeeded report can be exported.",
                current_status=report.status,
            )
        report_open_record(actor=request.user, report=report, via="export")
        return report

    @staticmethod
    def filename(report: ExplanationReport, ext: str) -> str:
        return f"{report.version.model.name}-v{report.version.number}-{report.method}-report-{report.pk}.{ext}"


class ReportExportJsonApi(_ExportApi):
    @extend_schema(
        parameters=IMPORTANCE_PARAMETERS,
        responses={(200, "application/json"): OpenApiTypes.OBJECT},
        operation_id="explanations_export_json",
    )
    def get(self, request, pk: int):
        report = self.succeeded_report(request, pk)
        unit, min_texts = view_params(request.query_params)
        body = json.dumps(exports.report_document(report, unit=unit, min_texts=min_texts), ensure_ascii=False, indent=1)
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{self.filename(report, "json")}"'
        return response


class ReportExportCsvApi(_ExportApi):
    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR}, operation_id="explanations_export_csv")
    def get(self, request, pk: int):
        report = self.succeeded_report(request, pk)
        # A byte-order mark so that spreadsheet programs read the Chinese as UTF-8.
        response = HttpResponse("\ufeff" + exports.report_csv(report), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{self.filename(report, "csv")}"'
        return response


class ReportExportGlobalCsvApi(_ExportApi):
    """A local report's global importance (share of the attribution mass per
    token or jieba word, with bootstrap intervals) as CSV."""

    @extend_schema(
        parameters=IMPORTANCE_PARAMETERS,
        responses={(200, "text/csv"): OpenApiTypes.STR},
        operation_id="explanations_export_global_csv",
    )
    def get(self, request, pk: int):
        report = self.succeeded_report(request, pk)
        if report.is_global:
            raise InvalidInput(f"Report {pk} is a {report.method} report: it has no per-text values to rank.")
        unit, min_texts = view_params(request.query_params)
        body = exports.global_importance_csv(report, unit=unit, min_texts=min_texts)
        response = HttpResponse("\ufeff" + body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{self.filename(report, "global.csv")}"'
        return response
