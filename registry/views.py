"""Server-rendered pages of the registry. Same selectors and services as the API."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST, require_safe

from glassbox.errors import GlassboxError
from glassbox.page_errors import page_errors
from governance.access import is_admin
from governance.selectors import certification_state, recertification_refusal, review_latest
from registry import selectors, services
from registry.forms import VersionUploadForm
from registry.uploads import (
    UploadedArtifact,
    check_upload_not_truncated,
    install_hashing_upload_handler,
)


@require_safe
@login_required
@page_errors
def model_list(request):
    return render(request, "registry/model_list.html", {"models": selectors.model_list(user=request.user)})


def _model_detail_context(request, model, *, redaction_error: str | None = None) -> dict:
    return {
        "model": model,
        "versions": selectors.version_list(user=request.user, model=model),
        "can_upload": model.can_receive_version_from(request.user),
        "can_set_redaction": is_admin(request.user),
        "redaction_error": redaction_error,
    }


@require_safe
@login_required
@page_errors
def model_detail(request, name: str):
    model = selectors.model_get(user=request.user, name=name)
    return render(request, "registry/model_detail.html", _model_detail_context(request, model))


# The form's two values; anything else reaches the service as sent, which refuses it.
REDACTION_CHOICES = {"on": True, "off": False}


@require_POST
@login_required
@page_errors
def model_input_redaction(request, name: str):
    """The admins' switch on the model page: redact stored prediction inputs or not."""
    model = selectors.model_get(user=request.user, name=name)
    raw = request.POST.get("enabled", "")
    try:
        # The service asks who is calling before it looks at the value (a refusal is a 403).
        model = services.model_input_redaction_set(
            actor=request.user, model=model, enabled=REDACTION_CHOICES.get(raw, raw)
        )
    except GlassboxError as exc:
        if exc.status_code == 403:
            raise
        context = _model_detail_context(request, model, redaction_error=exc.message)
        return render(request, "registry/model_detail.html", context, status=400)
    state = "redacted" if model.redact_inputs else "stored as sent (not redacted)"
    messages.success(request, f"Prediction inputs of {model.name} are now {state}.")
    return redirect(model.get_absolute_url())


@require_safe
@login_required
@page_errors
def version_detail(request, name: str, number: int):
    version = selectors.version_get(user=request.user, name=name, number=number)
    context = {
        "version": version,
        "model": version.model,
        "review": review_latest(version),
        "can_submit": version.can_be_submitted_by(request.user),
        "certification": certification_state(version),
        "can_recertify": recertification_refusal(user=request.user, version=version) is None,
    }
    return render(request, "registry/version_detail.html", context)


# CSRF is checked in the inner view, after the streaming upload handler is in
# place (Django's documented pattern for custom upload handlers).
@csrf_exempt
@login_required
@page_errors
def version_upload(request, name: str):
    model = selectors.model_get(user=request.user, name=name)
    if not model.can_receive_version_from(request.user):
        raise PermissionDenied("Only engineers may upload model versions.")
    if request.method == "POST":
        limit = settings.GLASSBOX_UPLOAD_LIMITS["max_upload_bytes"]
        try:
            install_hashing_upload_handler(request, max_bytes=limit)
        except GlassboxError as exc:
            form = VersionUploadForm()
            form.add_error(None, exc.message)
            return render(request, "registry/version_upload.html", {"model": model, "form": form}, status=413)
    return _version_upload_form(request, model)


@csrf_protect
def _version_upload_form(request, model):
    if request.method != "POST":
        return render(request, "registry/version_upload.html", {"model": model, "form": VersionUploadForm()})
    form = VersionUploadForm(request.POST, request.FILES)
    uploaded = request.FILES.get("artifact")
    try:
        check_upload_not_truncated(request, max_bytes=settings.GLASSBOX_UPLOAD_LIMITS["max_upload_bytes"])
        if form.is_valid():
            values = dict(form.cleaned_data)
            values.pop("artifact")
            uploaded = None  # the service owns (and removes) the file from here on
            version = services.version_create(
                actor=request.user,
                model=model,
                upload=UploadedArtifact.from_uploaded_file(form.cleaned_data["artifact"]),
                **values,
            )
            messages.success(request, f"Uploaded {version}: SHA-256 {version.artifact_sha256[:12]}…")
            return redirect(version.get_absolute_url())
    except GlassboxError as exc:
        form.add_error(None, exc.message)
    finally:
        if uploaded is not None and hasattr(uploaded, "temporary_file_path"):
            UploadedArtifact.from_uploaded_file(uploaded).discard()
    return render(request, "registry/version_upload.html", {"model": model, "form": form}, status=400)


@require_safe
@login_required
@page_errors
def dataset_list(request):
    return render(request, "registry/dataset_list.html", {"datasets": selectors.dataset_list(user=request.user)})


@require_safe
@login_required
@page_errors
def dataset_detail(request, pk: int):
    dataset = selectors.dataset_get(user=request.user, pk=pk)
    preview = selectors.dataset_rows(dataset)[:20]
    return render(request, "registry/dataset_detail.html", {"dataset": dataset, "preview": preview})
