"""Server-rendered pages of explanation reports. Same selectors and services as the API."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from explanations import charts, selectors, services
from explanations.forms import ReportRequestForm
from explanations.models import ExplanationReport
from glassbox.errors import GlassboxError, NotPermitted
from glassbox.page_errors import page_errors
from registry import selectors as registry_selectors


@require_http_methods(["GET", "POST"])
@login_required
@page_errors
def report_new(request, name: str, number: int):
    version = registry_selectors.version_get(user=request.user, name=name, number=number)
    if not request.user.has_perm("explanations.add_explanationreport"):
        raise PermissionDenied("Only engineers and reviewers may request explanation reports.")
    form = ReportRequestForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                report = services.report_request(
                    actor=request.user,
                    version=version,
                    method=data["method"],
                    dataset=data["dataset"],
                    texts=data["texts"] if data["dataset"] is None else None,
                    params=data["params"],
                )
            except NotPermitted:
                raise
            except GlassboxError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Requested {report}.")
                return redirect(report.get_absolute_url())
        status = 400
    context = {"version": version, "model": version.model, "form": form}
    return render(request, "explanations/report_new.html", context, status=status)


@require_safe
@login_required
@page_errors
def report_detail(request, pk: int):
    report = selectors.report_get(user=request.user, pk=pk)
    results = report.results or {}
    context = {
        "report": report,
        "version": report.version,
        "model": report.version.model,
        "can_cancel": report.can_be_cancelled_by(request.user),
        "fidelity_rows": charts.fidelity_table(report.fidelity),
        "fidelity_error": (report.fidelity or {}).get("error"),
    }
    if report.status == ExplanationReport.Status.SUCCEEDED:
        if report.is_global:
            context["pfi_chart"] = charts.pfi_chart(results)
            context["shap_summary_charts"] = charts.global_charts(results.get("shap_summary") or {})
        else:
            context["heatmap"] = charts.heatmap(results)
            context["heatmap_has_errors"] = any(row["sign_certain_share"] is not None for row in context["heatmap"])
            context["heatmap_limit"] = charts.HEATMAP_TEXTS
            context["global_charts"] = charts.global_charts(results.get("global") or {})
    return render(request, "explanations/report_detail.html", context)


@require_POST
@login_required
@page_errors
def report_cancel(request, pk: int):
    report = selectors.report_get(user=request.user, pk=pk)
    try:
        services.report_cancel(actor=request.user, report=report)
    except NotPermitted:
        raise
    except GlassboxError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Cancelled {report}.")
    return redirect(report.get_absolute_url())


@require_safe
@login_required
@page_errors
def version_compare(request, name: str):
    """Global importance of two versions of one model side by side."""
    model = registry_selectors.model_get(user=request.user, name=name)
    versions = list(registry_selectors.version_list(user=request.user, model=model))
    method = request.GET.get("method", "shap")
    if method not in ("shap", "lime"):
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
            context["comparison"] = charts.compare_globals(
                (old_report.results or {}).get("global") or {}, (new_report.results or {}).get("global") or {}
            )
    return render(request, "explanations/compare.html", context)
