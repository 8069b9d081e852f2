"""`GET /metrics`: serving counters, rollout and alert gauges in the
Prometheus text exposition format (version 0.0.4), written by hand: the
format is small and prometheus_client is not a dependency of Glassbox.

Access: a signed-in user (session or `Authorization: Token ...`) who may
read prediction logs (every Glassbox role), or a scraper presenting
`Authorization: Bearer $GLASSBOX_METRICS_TOKEN` when that variable is set.

Counters come from PredictionCounter rows (cumulative, written with each
prediction-log batch), so every process and every scrape sees the same
totals; the prediction-log buffer figures are this process's own.
"""

from __future__ import annotations

import hmac
import math

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label_value(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        if math.isnan(value):
            return "NaN"
        return repr(value)
    return str(value)


class Exposition:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics() -> str:
    from explanations.models import ExplanationReport
    from rollouts.models import Alert, PredictionCounter, Rollout
    from rollouts.prediction_log import BUCKET_LABELS, writer_stats
    from rollouts.serving import shadow_skipped

    out = Exposition()
    counters = list(
        PredictionCounter.objects.select_related("version__model").order_by(
            "version__model__name", "version__number", "route"
        )
    )

    def series(counter):
        return {"model": counter.version.model.name, "version": counter.version.number, "route": counter.route}

    out.family(
        "glassbox_predictions_total", "counter", "Predictions served (and shadow answers), by version and route."
    )
    for counter in counters:
        out.sample("glassbox_predictions_total", counter.requests, **series(counter))
    out.family("glassbox_prediction_errors_total", "counter", "Predictions whose model call raised.")
    for counter in counters:
        out.sample("glassbox_prediction_errors_total", counter.errors, **series(counter))
    out.family("glassbox_prediction_latency_seconds", "histogram", "Model call time per prediction (its batch).")
    for counter in counters:
        buckets = counter.latency_buckets or {}
        for label in BUCKET_LABELS:
            le = label if label == "+Inf" else _number(float(label) / 1000.0)
            out.sample("glassbox_prediction_latency_seconds_bucket", buckets.get(label, 0), **series(counter), le=le)
        out.sample("glassbox_prediction_latency_seconds_sum", counter.latency_ms_sum / 1000.0, **series(counter))
        out.sample("glassbox_prediction_latency_seconds_count", counter.requests, **series(counter))

    active = list(Rollout.objects.select_related("model", "candidate").filter(status__in=Rollout.ACTIVE_STATUSES))
    out.family(
        "glassbox_rollout_candidate_weight", "gauge", "Percent of live traffic the active rollout's candidate answers."
    )
    for rollout in active:
        out.sample(
            "glassbox_rollout_candidate_weight",
            rollout.candidate_weight,
            model=rollout.model.name,
            rollout=rollout.pk,
            candidate=rollout.candidate.number,
        )
    out.family("glassbox_rollout_status", "gauge", "1 for the status an active rollout is in.")
    for rollout in active:
        for status in Rollout.ACTIVE_STATUSES:
            out.sample(
                "glassbox_rollout_status",
                1 if rollout.status == status else 0,
                model=rollout.model.name,
                rollout=rollout.pk,
                status=status,
            )
    out.family("glassbox_rollout_step", "gauge", "Index of the active rollout's current step.")
    for rollout in active:
        out.sample("glassbox_rollout_step", rollout.current_step, model=rollout.model.name, rollout=rollout.pk)

    open_alerts = (
        Alert.objects.filter(cleared_at__isnull=True)
        .values("model__name", "version__number", "metric")
        .annotate(n=Count("id"))
        .order_by("model__name", "version__number", "metric")
    )
    out.family("glassbox_alerts_open", "gauge", "Monitoring alerts raised and not cleared.")
    for row in open_alerts:
        out.sample(
            "glassbox_alerts_open",
            row["n"],
            model=row["model__name"],
            version=row["version__number"],
            metric=row["metric"],
        )

    reports = dict(
        ExplanationReport.objects.filter(status__in=["queued", "running"])
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    out.family("glassbox_explanation_reports", "gauge", "Explanation reports waiting or running.")
    for status in ("queued", "running"):
        out.sample("glassbox_explanation_reports", reports.get(status, 0), status=status)

    stats = writer_stats()
    out.family("glassbox_prediction_log_buffered", "gauge", "Prediction log rows this process holds unwritten.")
    out.sample("glassbox_prediction_log_buffered", stats["buffered"])
    out.family(
        "glassbox_prediction_log_dropped_total",
        "counter",
        "Prediction log rows this process dropped (buffer bound reached during an outage).",
    )
    out.sample("glassbox_prediction_log_dropped_total", stats["dropped"])
    out.family("glassbox_shadow_skipped_total", "counter", "Mirrored inputs this process skipped (shadow pool behind).")
    out.sample("glassbox_shadow_skipped_total", shadow_skipped)
    return out.text()


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
    try:
        found = TokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return None
    return found[0] if found else None


@require_safe
def metrics_view(request):
    if not _bearer_token_matches(request):
        user = _user_of(request)
        if user is None:
            response = JsonResponse({"detail": "Sign in, or send the metrics bearer token."}, status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        if not user.has_perm("rollouts.view_predictionlog"):
            return JsonResponse({"detail": "You have no role that may read serving metrics."}, status=403)
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE)
