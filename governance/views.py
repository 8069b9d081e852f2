from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe

from glassbox.errors import GlassboxError
from glassbox.page_errors import page_errors, service_call
from governance import selectors, services
from governance.audit_actions import AuditAction
from governance.models import Decision
from registry import selectors as registry_selectors

# --- review workflow pages -----------------------------------------------------


@require_safe
@login_required
@page_errors
def review_queue(request):
    reviews = list(selectors.review_queue(user=request.user))
    for review in reviews:
        # Why this user may not approve (None when they may), shown per row.
        review.approve_refusal = review.decision_refusal(request.user, Decision.Verdict.APPROVE)
    return render(request, "governance/review_queue.html", {"reviews": reviews, "now": timezone.now()})


@login_required
@page_errors
@require_http_methods(["GET", "POST"])
def review_detail(request, name: str, number: int):
    error = None
    status = 200
    if request.method == "POST":
        version = services.review_target_get(
            actor=request.user, name=name, number=number, action=AuditAction.REVIEW_DECIDE
        )
        decision = request.POST.get("decision", "")
        try:
            services.decision_record(
                actor=request.user, version=version, decision=decision, comment=request.POST.get("comment", "")
            )
        except GlassboxError as exc:
            error, status = exc.message, exc.status_code
        else:
            noun = "approval" if decision == Decision.Verdict.APPROVE else "rejection"
            messages.success(request, f"Recorded your {noun} of {version}: it is {version.get_status_display()}.")
            return redirect("reviews:detail", name=name, number=number)
    version = registry_selectors.version_get(user=request.user, name=name, number=number)
    # The latest review is the live one; the dossier lists them all.
    review = next(iter(selectors.review_history(user=request.user, version=version)), None)
    context = {
        "version": version,
        "model": version.model,
        "review": review,
        "error": error,
        "comment": request.POST.get("comment", "") if error else "",
    }
    if review is not None:
        context["approve_refusal"] = review.decision_refusal(request.user, Decision.Verdict.APPROVE)
        context["reject_refusal"] = review.decision_refusal(request.user, Decision.Verdict.REJECT)
    return render(request, "governance/review_detail.html", context, status=status)


@login_required
@page_errors
@require_POST
def review_submit(request, name: str, number: int):
    version = services.review_target_get(actor=request.user, name=name, number=number, action=AuditAction.REVIEW_SUBMIT)
    service_call(
        request,
        services.review_submit,
        success=lambda review: f"Submitted {version} for review: it needs {review.required_approvals} approval(s).",
        refusal_as_message=True,
        actor=request.user,
        version=version,
    )
    return redirect(version.get_absolute_url())


@login_required
@page_errors
@require_POST
def review_recertify(request, name: str, number: int):
    version = services.review_target_get(
        actor=request.user, name=name, number=number, action=AuditAction.VERSION_RECERTIFY_REQUEST
    )
    service_call(
        request,
        services.review_recertify,
        success=lambda review: (
            f"Opened re-certification round #{review.pk} of {version}: it needs {review.required_approvals} "
            f"approval(s); it stays {version.get_status_display()} meanwhile."
        ),
        refusal_as_message=True,
        actor=request.user,
        version=version,
    )
    return redirect(version.get_absolute_url())


@login_required
@page_errors
@require_GET
def dossier(request, name: str, number: int):
    if request.GET.get("format") == "json":
        return dossier_json(request, name=name, number=number)
    version = registry_selectors.version_get(user=request.user, name=name, number=number)
    context = {
        "version": version,
        "model": version.model,
        "reviews": selectors.review_history(user=request.user, version=version),
        "certification": selectors.certification_state(version),
        "audit_events": selectors.version_audit_events(user=request.user, version=version),
        "rollout_history": selectors.version_rollouts(user=request.user, version=version),
        "generated_at": timezone.now(),
    }
    return render(request, "governance/dossier.html", context)


@login_required
@page_errors
@require_GET
def dossier_json(request, name: str, number: int):
    version = registry_selectors.version_get(user=request.user, name=name, number=number)
    data = selectors.version_dossier(user=request.user, version=version)
    response = JsonResponse(data, json_dumps_params={"ensure_ascii": False, "indent": 2})
    response["Content-Disposition"] = f'attachment; filename="{version.model.name}-v{version.number}-dossier.json"'
    return response


@login_required
@page_errors
@require_GET
def dashboard(request):
    context = selectors.dashboard(user=request.user)
    return render(request, "governance/dashboard.html", {**context, "now": timezone.now()})
