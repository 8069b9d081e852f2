"""Server-rendered pages of explanation reports. Same selectors and services as the API."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from explanations import charts, selectors, services
from explanations.forms import ReportRequestForm
from explanations.global_importance import DEFAULT_MIN_TEXTS, UNITS, cached_global_importance
from explanations.models import ExplanationReport
from glassbox.errors import GlassboxError, NotPermitted
from glassbox.page_errors import page_errors, service_call
from governance.services import report_open_record
from registry import selectors as registry_selectors


@require_http_methods(["GET", "POST"])
@login_required
@page_errors
def report_new(request, name: str, number: int):
    version = registry_selectors.version_get(user=request.user, name=name, number=number)
    if not version.model.access_of(request.user).request_reports:
        raise PermissionDenied("Only engineers and reviewers may request explanation reports.")
    form = ReportRequestForm(request.POST or None)
    status = 200
    estimate = None
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            arguments = {
                "actor": request.user,
                "version": version,
                "method": data["method"],
                "dataset": data["dataset"],
                "texts": data["texts"] if data["dataset"] is None else None,
                "params": data["params"],
                "sample": data["sample"],
            }
            try:
                if request.POST.get("action") == "estimate":
                    # Say how long it would take; nothing is queued.
                    estimate = {**services.report_plan(**arguments).estimate}
                else:
                    report = services.report_request(**arguments)
            except NotPermitted:
                raise
            except GlassboxError as exc:
                form.add_error(None, exc.message)
                estimate = dict(exc.extra.get("estimate") or {}) or None
            else:
                if estimate is None:
                    messages.success(request, f"Requested {report}.")
                    return redirect(report.get_absolute_url())
        if not form.is_valid():
            status = 400
    if estimate:
        estimate["duration"] = services.human_duration(estimate["seconds"])
    context = {"version": version, "model": version.model, "form": form, "estimate": estimate}
    return render(request, "explanations/report_new.html", context, status=status)


def _importance_view(request) -> dict:
    """The global-importance view a page asks for: ?unit=token|word and
    ?min_texts=N (texts a token must occur in to be ranked); anything else
    falls back to the defaults."""
    unit = request.GET.get("unit", "token")
    if unit not in UNITS:
        unit = "token"
    try:
        min_texts = int(request.GET.get("min_texts", DEFAULT_MIN_TEXTS))
    except ValueError:
        min_texts = DEFAULT_MIN_TEXTS
    return {"unit": unit, "min_texts": min(max(min_texts, 1), 1000), "units": UNITS}


@require_safe
@login_required
@page_errors
def report_detail(request, pk: int):
    report = selectors.report_get(user=request.user, pk=pk)
    report_open_record(actor=request.user, report=report, via="page")
    results = report.results or {}
    remaining = report.remaining_seconds(timezone.now())
    context = {
        "report": report,
        "remaining": None if remaining is None else services.human_duration(remaining),
        "version": report.version,
        "model": report.version.model,
        "can_cancel": report.can_be_cancelled_by(request.user),
        "fidelity_rows": charts.fidelity_table(report.fidelity),
        "fidelity_error": (report.fidelity or {}).get("error"),
    }
    if report.status == ExplanationReport.Status.SUCCEEDED:
        if report.is_global:
            context["pfi_chart"] = charts.pfi_chart(results)
            context["shap_summary_charts"] = charts.legacy_global_charts(results.get("shap_summary") or {})
        else:
            context["heatmap"] = charts.heatmap(results)
            context["heatmap_has_errors"] = any(row["sign_certain_share"] is not None for row in context["heatmap"])
            context["heatmap_limit"] = charts.HEATMAP_TEXTS
            view = _importance_view(request)
            context["importance_view"] = view
            context["global_charts"] = charts.global_charts(
                cached_global_importance(report, unit=view["unit"], min_texts=view["min_texts"])
            )
    return render(request, "explanations/report_detail.html", context)


@require_POST
@login_required
@page_errors
def report_cancel(request, pk: int):
    report = selectors.report_get(user=request.user, pk=pk)
    service_call(
        request,
        services.report_cancel,
        success=lambda _: f"Cancelled {report}.",
        refusal_as_message=True,
        actor=request.user,
        report=report,
    )
    return redirect(report.get_absolute_url())


@require_safe
@login_required
@page_errors
def version_compare(request, name: str):
    """Global importance of two versions of one model side by side."""
    model = registry_selectors.model_get(user=request.user, name=name)
    versions = list(registry_selectors.version_list(user=request.user, model=model))
    method = request.GET.get("method", "shap")
    if method not in ("shap", "lime", "ig"):
        method = "shap"

    def pick(param: str, default):
        try:
            number = int(request.GET.get(param, ""))
        except ValueError:
            return default
        return next((v for v in versions if v.number == number), None)

    # Defaults: the newest version against the one before it.
    new = pick("b", versions[0] if versions else None)
    old = pick("a", versions[1] if len(versions) > 1 else None)
    context = {"model": model, "versions": versions, "old": old, "new": new, "method": method}
    if old is not None and new is not None:
        old_report, new_report = selectors.comparable_reports(old=old, new=new, method=method)
        context.update(old_report=old_report, new_report=new_report)
        if old_report is not None and new_report is not None:
            view = _importance_view(request)
            context["importance_view"] = view
            context["compare_fields"] = [("a", old.number), ("b", new.number), ("method", method)]
            context["comparison"] = charts.compare_globals(
                cached_global_importance(old_report, unit=view["unit"], min_texts=view["min_texts"]),
                cached_global_importance(new_report, unit=view["unit"], min_texts=view["min_texts"]),
            )
    return render(request, "explanations/compare.html", context)
