"""`GET /metrics`: serving counters, rollout and alert gauges in the
Prometheus text exposition format (version 0.0.4), rendered by
prometheus_client from a collector that reads the database on each scrape.

Access: a signed-in user (session or `Authorization: Token ...`) who may
read prediction logs (every Glassbox role), or a scraper presenting
`Authorization: Bearer $GLASSBOX_METRICS_TOKEN` when that variable is set.
A user sees the series of the models they may read (governance/access.py),
so another team's model names never show; the scraper sees every model.

Counters come from PredictionCounter rows (cumulative, written with each
prediction-log batch), so every process and every scrape sees the same
totals; the prediction-log buffer figures are this process's own.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.db.models import Count, Q
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def _counter_families(visible: Visible) -> Iterator[Metric]:
    from rollouts.models import PredictionCounter
    from rollouts.prediction_log import BUCKET_LABELS

    counters = list(
        PredictionCounter.objects.select_related("version__model")
        .filter(visible.on("version__model__"))
        .order_by("version__model__name", "version__number", "route")
    )
    labels = ["model", "version", "route"]

    def series(counter) -> list[str]:
        return [counter.version.model.name, str(counter.version.number), counter.route]

    predictions = CounterMetricFamily(
        "glassbox_predictions_total", "Predictions served (and shadow answers), by version and route.", labels=labels
    )
    errors = CounterMetricFamily(
        "glassbox_prediction_errors_total", "Predictions whose model call raised.", labels=labels
    )
    latency = HistogramMetricFamily(
        "glassbox_prediction_latency_seconds", "Model call time per prediction (its batch).", labels=labels
    )
    for counter in counters:
        predictions.add_metric(series(counter), counter.requests)
        errors.add_metric(series(counter), counter.errors)
        named = dict(zip(labels, series(counter)))
        buckets = counter.latency_buckets or {}
        # Samples one by one (not add_metric): the stored totals are the
        # truth, _count included, whatever the buckets hold.
        for label in BUCKET_LABELS:
            le = label if label == "+Inf" else repr(float(label) / 1000.0)
            latency.add_sample("glassbox_prediction_latency_seconds_bucket", {**named, "le": le}, buckets.get(label, 0))
        latency.add_sample("glassbox_prediction_latency_seconds_sum", named, counter.latency_ms_sum / 1000.0)
        latency.add_sample("glassbox_prediction_latency_seconds_count", named, counter.requests)
    yield from (predictions, errors, latency)


def _rollout_families(visible: Visible) -> Iterator[Metric]:
    from rollouts.models import Rollout

    active = list(
        Rollout.objects.select_related("model", "candidate")
        .filter(visible.on("model__"), status__in=Rollout.ACTIVE_STATUSES)
        .order_by("model__name", "id")
    )
    weight = GaugeMetricFamily(
        "glassbox_rollout_candidate_weight",
        "Percent of live traffic the active rollout's candidate answers.",
        labels=["model", "rollout", "candidate"],
    )
    status = GaugeMetricFamily(
        "glassbox_rollout_status", "1 for the status an active rollout is in.", labels=["model", "rollout", "status"]
    )
    step = GaugeMetricFamily(
        "glassbox_rollout_step", "Index of the active rollout's current step.", labels=["model", "rollout"]
    )
    for rollout in active:
        name, pk = rollout.model.name, str(rollout.pk)
        weight.add_metric([name, pk, str(rollout.candidate.number)], rollout.candidate_weight)
        for each in Rollout.ACTIVE_STATUSES:
            status.add_metric([name, pk, each], 1 if rollout.status == each else 0)
        step.add_metric([name, pk], rollout.current_step)
    yield from (weight, status, step)


def _alert_and_report_families(visible: Visible) -> Iterator[Metric]:
    from explanations.models import ExplanationReport
    from rollouts.models import Alert

    open_alerts = (
        Alert.objects.filter(visible.on("model__"), cleared_at__isnull=True)
        .values("model__name", "version__number", "metric")
        .annotate(n=Count("id"))
        .order_by("model__name", "version__number", "metric")
    )
    alerts = GaugeMetricFamily(
        "glassbox_alerts_open", "Monitoring alerts raised and not cleared.", labels=["model", "version", "metric"]
    )
    for row in open_alerts:
        alerts.add_metric([row["model__name"], str(row["version__number"]), row["metric"]], row["n"])
    yield alerts

    waiting = dict(
        ExplanationReport.objects.filter(visible.on("version__model__"), status__in=["queued", "running"])
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    reports = GaugeMetricFamily(
        "glassbox_explanation_reports", "Explanation reports waiting or running.", labels=["status"]
    )
    for status in ("queued", "running"):
        reports.add_metric([status], waiting.get(status, 0))
    yield reports


def _process_families() -> Iterator[Metric]:
    from rollouts import shadow
    from rollouts.prediction_log import writer_stats

    stats = writer_stats()
    yield GaugeMetricFamily(
        "glassbox_prediction_log_buffered", "Prediction log rows this process holds unwritten.", value=stats["buffered"]
    )
    yield CounterMetricFamily(
        "glassbox_prediction_log_dropped_total",
        "Prediction log rows this process dropped (buffer bound reached during an outage).",
        value=stats["dropped"],
    )
    yield CounterMetricFamily(
        "glassbox_shadow_skipped_total",
        "Mirrored inputs this process skipped (shadow pool behind).",
        value=shadow.shadow_skipped,
    )


class Visible:
    """Which models' series a scrape shows: every model (the scraper's bearer
    token, `user` None) or those `user` may read, as a filter on rows that
    reach their model through `prefix` ("model__", "version__model__")."""

    def __init__(self, user=None):
        self.user = user

    def on(self, prefix: str) -> Q:
        from governance.access import model_read_filter

        return Q() if self.user is None else model_read_filter(self.user, prefix)


class GlassboxCollector(Collector):
    """Every Glassbox metric of the models `visible` selects (all by
    default), read from the database (and this process's buffers) at
    scrape time."""

    def __init__(self, visible: Visible | None = None):
        self.visible = visible or Visible()

    def collect(self) -> Iterator[Metric]:
        yield from _counter_families(self.visible)
        yield from _rollout_families(self.visible)
        yield from _alert_and_report_families(self.visible)
        yield from _process_families()


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]):
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render(families: Iterable[Metric]) -> str:
    """Metric families in the text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry).decode()


def render_metrics(user=None) -> str:
    """Every model's metrics (the scraper's bearer token), or those of the
    models `user` may read."""
    return render(GlassboxCollector(Visible(user)).collect())


def _bearer_token_matches(request) -> bool:
    expected = settings.GLASSBOX_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if not expected or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), expected.encode())


def _user_of(request):
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user
    from governance.token_auth import ApiTokenAuthentication

    # A scoped token (predict/feedback only) raises PermissionDenied here: the caller answers 403.
    try:
        found = ApiTokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return None
    return found[0] if found else None


@require_safe
def metrics_view(request):
    user = None
    if not _bearer_token_matches(request):
        try:
            user = _user_of(request)
        except PermissionDenied as refused:
            return JsonResponse(
                {"detail": str(refused.detail), "code": "permission_denied", **getattr(refused, "extra", {})},
                status=403,
            )
        if user is None:
            response = JsonResponse(
                {"detail": "Sign in, or send the metrics bearer token.", "code": "not_authenticated"}, status=401
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        if not user.has_perm("rollouts.view_predictionlog"):
            return JsonResponse(
                {"detail": "You have no role that may read serving metrics.", "code": "permission_denied"}, status=403
            )
    return HttpResponse(render_metrics(user), content_type=CONTENT_TYPE)
