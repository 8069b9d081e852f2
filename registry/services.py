"""Every write to the registry. Each service takes `actor=`, runs in one
transaction and records an AuditEvent in it; refusals that matter are
recorded too, in a transaction of their own."""

from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from glassbox.errors import Conflict, GlassboxError, InvalidInput, NotPermitted, StorageUnavailable
from governance.access import ROLE_RANK, Role, is_admin, team_roles_of
from governance.audit import record_event, record_refusal
from governance.audit_actions import AuditAction
from governance.models import Team
from registry.artifacts import artifact_key, delete_blob, install_prepared, prepare_artifact, store_blob
from registry.datasets import parse_dataset
from registry.mlflow_models import MLFLOW_UPLOAD_FLAVOR
from registry.models import Dataset, ModelVersion, RegisteredModel, model_name_validator
from registry.uploads import UploadedArtifact

CARD_FIELDS = ("description", "intended_use", "limitations", "training_data", "evaluation_data")


def _check_name(name: str, *, what: str) -> None:
    try:
        model_name_validator(name)
    except ValidationError as exc:
        raise InvalidInput(f"Invalid {what} name: {exc.messages[0]}") from exc


def _owning_team(*, actor, team: str | None):
    """The team a new model goes to: the one named, else the caller's only
    team. The caller must be an engineer or maintainer of it (or an admin)."""
    roles = team_roles_of(actor)
    if not team:
        if len(roles) > 1 or (not roles and is_admin(actor)):
            raise InvalidInput("Name the team that will own the model (`team`).", code="team_required", field="team")
        if not roles:
            raise NotPermitted("Only engineers may register models.")
        owner = Team.objects.get(pk=next(iter(roles)))
    else:
        owner = Team.objects.filter(name=str(team)[:100]).first()
        if owner is None:
            raise InvalidInput(f"No team named {str(team)[:100]!r}.", field="team")
    if not is_admin(actor) and ROLE_RANK.get(roles.get(owner.pk), 0) < ROLE_RANK[Role.ENGINEER]:
        raise NotPermitted(f"Only engineers and maintainers of team {owner.name} may register its models.")
    return owner


def model_create(
    *,
    actor,
    name: str,
    risk_tier: str,
    task: str = RegisteredModel.Task.TEXT_CLASSIFICATION,
    description: str = "",
    team: str | None = None,
) -> RegisteredModel:
    try:
        if not actor.is_authenticated:
            raise NotPermitted("Only engineers may register models.")
        owner = _owning_team(actor=actor, team=team)
    except GlassboxError as exc:
        record_refusal(
            actor=actor,
            action=AuditAction.MODEL_CREATE,
            reason=exc.message,
            object_label=str(name)[:100],
            detail={"team": str(team)[:100] if team is not None else None, "status_code": exc.status_code},
        )
        raise
    _check_name(name, what="model")
    if risk_tier not in RegisteredModel.RiskTier.values:
        raise InvalidInput(f"risk_tier must be one of {', '.join(RegisteredModel.RiskTier.values)}.")
    if task not in RegisteredModel.Task.values:
        raise InvalidInput(f"task must be one of {', '.join(RegisteredModel.Task.values)}.")
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.create(
                name=name, task=task, risk_tier=risk_tier, description=description, team=owner, created_by=actor
            )
            record_event(
                actor=actor,
                action=AuditAction.MODEL_CREATE,
                obj=model,
                changes={"after": {"name": name, "task": task, "risk_tier": risk_tier, "team": owner.name}},
            )
    except IntegrityError as exc:
        raise Conflict(f"A model named {name!r} already exists.") from exc
    return model


def model_input_redaction_set(*, actor, model: RegisteredModel, enabled: Any) -> RegisteredModel:
    """Turn the redaction of personal data in the model's stored prediction
    inputs on or off (README "Personal data in prediction logs"): an admin's
    act, audited with the value before and after; a refusal is audited too.
    Serving processes pick the new value up within a second."""
    try:
        if not is_admin(actor):
            raise NotPermitted("Only admins may change whether a model's stored inputs are redacted.")
        if not isinstance(enabled, bool):
            raise InvalidInput("enabled must be true or false.", field="enabled")
    except GlassboxError as exc:
        record_refusal(
            actor=actor,
            action=AuditAction.MODEL_INPUT_REDACTION,
            reason=exc.message,
            obj=model,
            detail={"enabled": enabled if isinstance(enabled, bool) else str(enabled)[:100]},
        )
        raise
    with transaction.atomic():
        locked = RegisteredModel.objects.select_for_update().get(pk=model.pk)
        before = locked.redact_inputs
        if before != enabled:
            locked.redact_inputs = enabled
            locked.save(update_fields=["redact_inputs"])
            record_event(
                actor=actor,
                action=AuditAction.MODEL_INPUT_REDACTION,
                obj=locked,
                changes={"before": {"redact_inputs": before}, "after": {"redact_inputs": enabled}},
            )
            transaction.on_commit(lambda: _forget_served_model(locked))
    model.redact_inputs = locked.redact_inputs
    return locked


def _forget_served_model(model: RegisteredModel) -> None:
    from rollouts.routing import forget_model  # the serving side caches the model row

    forget_model(model.pk, model.name)


def _parse_metrics(metrics: Any) -> dict:
    if metrics in (None, ""):
        return {}
    if not isinstance(metrics, dict):
        raise InvalidInput("metrics must be a JSON object of metric name to number.")
    for key, value in metrics.items():
        if not isinstance(key, str) or len(key) > 100:
            raise InvalidInput("metric names are strings of at most 100 characters.")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"metric {key!r} must be a number.")
    return metrics


def version_upload_precheck(*, actor, model: RegisteredModel) -> None:
    """Refuse (and record it) before the body of an upload is even read."""
    if not model.can_receive_version_from(actor):
        record_refusal(
            actor=actor,
            action=AuditAction.VERSION_CREATE,
            reason="not permitted",
            object_type="registry.registeredmodel",
            object_id=model.pk,
            object_label=model.name,
            model_name=model.name,
        )
        raise NotPermitted(f"Only engineers of team {model.team} may upload versions of {model.name}.")
    archived = model.archived_refusal("take new versions")
    if archived is not None:
        record_refusal(
            actor=actor,
            action=AuditAction.VERSION_CREATE,
            reason=archived.message,
            object_type="registry.registeredmodel",
            object_id=model.pk,
            object_label=model.name,
            model_name=model.name,
        )
        raise archived


def version_create(
    *,
    actor,
    model: RegisteredModel,
    upload: UploadedArtifact,
    flavor: str,
    metrics: dict | None = None,
    **card: str,
) -> ModelVersion:
    """Check, unpack, load-test and store an artifact, then number the version.
    On any refusal the upload, the staging folder and any stored blob are gone
    and no row is written."""
    refusal = {
        "object_type": "registry.registeredmodel",
        "object_id": model.pk,
        "object_label": model.name,
        "model_name": model.name,
        "detail": {"filename": upload.filename[:255]},
    }
    with _upload_attempt(actor=actor, action=AuditAction.VERSION_CREATE, upload=upload, refusal=refusal) as attempt:
        if not model.can_receive_version_from(actor):
            raise NotPermitted(f"Only engineers of team {model.team} may upload versions of {model.name}.")
        if (archived := model.archived_refusal("take new versions")) is not None:
            raise archived
        if flavor not in (*ModelVersion.Flavor.values, MLFLOW_UPLOAD_FLAVOR):
            raise InvalidInput(f"flavor must be one of {', '.join(ModelVersion.Flavor.values)} or mlflow.")
        unknown = set(card) - set(CARD_FIELDS)
        if unknown:
            raise InvalidInput(f"Unknown model-card fields: {', '.join(sorted(unknown))}.")
        metrics = _parse_metrics(metrics)
        duplicate = model.versions.filter(artifact_sha256=upload.sha256).values_list("number", flat=True).first()
        if duplicate is not None:
            raise Conflict(f"This artifact is already version {duplicate} of {model.name}.")

        prepared = prepare_artifact(upload.path, flavor, sha256=upload.sha256)
        try:
            key = artifact_key(upload.sha256, prepared.fmt)
            attempt.store(key)
            with transaction.atomic():
                # Lock the model row: concurrent uploads take numbers one at a time.
                locked = RegisteredModel.objects.select_for_update().get(pk=model.pk)
                # Archived while the artifact was being checked: nothing is written.
                if (archived := locked.archived_refusal("take new versions")) is not None:
                    raise archived
                number = (locked.versions.aggregate(top=Max("number"))["top"] or 0) + 1
                version = ModelVersion.objects.create(
                    model=locked,
                    number=number,
                    flavor=prepared.flavor,
                    metrics=metrics,
                    labels=prepared.labels,
                    max_length=prepared.max_length,
                    artifact_sha256=upload.sha256,
                    artifact_size=upload.size,
                    artifact_filename=upload.filename[:255],
                    artifact_key=key,
                    artifact_format=prepared.fmt,
                    files=[{"name": m.name, "size": m.size} for m in prepared.members],
                    mlflow_model=prepared.mlflow.card if prepared.mlflow else {},
                    created_by=actor,
                    **{field: card.get(field, "") or "" for field in CARD_FIELDS},
                )
                record_event(
                    actor=actor,
                    action=AuditAction.VERSION_CREATE,
                    obj=version,
                    changes={"after": {"status": version.status, "sha256": upload.sha256, "flavor": prepared.flavor}},
                    detail={"size": upload.size, "labels": prepared.labels, **_mlflow_audit_detail(prepared)},
                )
                # Workers load the new model ahead of its first real use.
                transaction.on_commit(lambda: enqueue_warm(version.pk))
        except BaseException:
            prepared.discard()
            raise
        install_prepared(prepared, upload.sha256)
        return version


def _mlflow_audit_detail(prepared) -> dict:
    if prepared.mlflow is None:
        return {}
    card = prepared.mlflow.card
    return {"mlflow": {key: card.get(key) for key in ("run_id", "model_uuid", "mlflow_version", "flavor")}}


class _UploadAttempt:
    """What an upload in progress has put in the artifact store so far."""

    def __init__(self, upload: UploadedArtifact):
        self.upload = upload
        self.stored_key: str | None = None

    def store(self, key: str) -> None:
        if store_blob(self.upload.path, key):
            self.stored_key = key


@contextmanager
def _upload_attempt(*, actor, action: AuditAction, upload: UploadedArtifact, refusal: dict[str, Any]):
    """The one cleanup of every upload service: on any failure the blob this
    attempt stored is deleted, and a refusal (a GlassboxError) is recorded as
    a `denied` event with the upload's digest and size; the uploaded file is
    gone afterwards whatever happened."""
    attempt = _UploadAttempt(upload)
    try:
        yield attempt
    except BaseException as exc:
        if attempt.stored_key:
            delete_blob(attempt.stored_key)
        # An outage of the store is a fault, not a refusal of the caller: no event.
        if isinstance(exc, GlassboxError) and not isinstance(exc, StorageUnavailable):
            detail = {"sha256": upload.sha256, "size": upload.size, **refusal.get("detail", {})}
            record_refusal(actor=actor, action=action, reason=exc.message, **{**refusal, "detail": detail})
        raise
    finally:
        upload.discard()


def enqueue_warm(version_id: int) -> None:
    """Ask the workers to load a version (after commit); never fails the caller."""
    from registry.tasks import warm_version

    try:
        warm_version.delay(version_id)
    except Exception:  # a broker outage must not fail the write that committed
        import logging

        logging.getLogger(__name__).exception("could not enqueue warm_version(%s)", version_id)


def version_choose_inference_backend(*, actor, version: ModelVersion) -> ModelVersion:
    """Export a transformers version to ONNX, check it against torch and record
    which backend serves it, with the reason. Runs in a worker (the warm task),
    never on a request. Never fails for the model's sake: a failed export or a
    failed check records torch and why. Idempotent: a decided version is left
    alone, unless its ONNX export is missing on this machine."""
    from django.conf import settings

    from registry.onnx_export import MODEL_FILE, BackendChoice, choose_backend
    from registry.predictors import get_predictor, resolve_device
    from registry.selectors import onnx_export_dir

    mode = settings.GLASSBOX_INFERENCE_BACKEND
    if version.flavor != ModelVersion.Flavor.TRANSFORMERS or mode == "torch":
        return version
    export_dir = onnx_export_dir(version.artifact_sha256)
    Backend = ModelVersion.InferenceBackend
    if version.inference_backend == Backend.TORCH or (
        version.inference_backend == Backend.ONNX and (export_dir / MODEL_FILE).is_file()
    ):
        return version
    device = resolve_device(settings.GLASSBOX_DEVICE)
    if device == "cuda" and mode == "auto":
        choice = BackendChoice(
            "torch", "torch serves on cuda (GLASSBOX_INFERENCE_BACKEND=auto keeps torch on a GPU; onnx would check it)."
        )
    else:
        from registry.artifacts import local_model_path

        path = local_model_path(
            sha256=version.artifact_sha256, artifact_key=version.artifact_key, flavor=version.flavor
        )
        reference = get_predictor(version.artifact_sha256, path, version.flavor, backend="torch", device=device)
        choice = choose_backend(reference, path, export_dir, device=device, tolerance=settings.GLASSBOX_ONNX_TOLERANCE)
    detail = {"device": device, "reason": choice.reason[:1000]}
    if choice.agreement is not None:
        detail |= {
            "texts": choice.agreement.texts,
            "max_difference": choice.agreement.max_difference,
            "label_mismatches": choice.agreement.label_mismatches,
            "tolerance": choice.agreement.tolerance,
        }
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        before = locked.inference_backend
        locked.inference_backend = choice.backend
        locked.inference_backend_reason = choice.reason[:1000]
        locked.save(update_fields=["inference_backend", "inference_backend_reason"])
        record_event(
            actor=actor,
            action=AuditAction.VERSION_INFERENCE_BACKEND,
            obj=locked,
            changes={"before": {"inference_backend": before}, "after": {"inference_backend": choice.backend}},
            detail=detail,
        )
    version.inference_backend = locked.inference_backend
    version.inference_backend_reason = locked.inference_backend_reason
    return locked


def version_move(
    *,
    actor,
    version: ModelVersion,
    to_status: str,
    action: AuditAction,
    detail: dict | None = None,
    fields: dict[str, Any] | None = None,
) -> ModelVersion:
    """The one way a version's status changes. Callers (review, rollout
    services) decide who may; this enforces the lifecycle and records it.
    `fields` are other columns that change with the status (the
    re-certification date an approval sets), recorded in the same event."""
    fields = fields or {}
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if not locked.can_move_to(to_status):
            raise Conflict(f"{locked} is {locked.status}; it cannot move to {to_status}.", current_status=locked.status)
        before = {"status": locked.status, **{name: getattr(locked, name) for name in fields}}
        locked.status = to_status
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save(update_fields=["status", *fields])
        record_event(
            actor=actor,
            action=action,
            obj=locked,
            changes={"before": before, "after": {"status": to_status, **fields}},
            detail=detail or {},
        )
    version.status = locked.status
    for name, value in fields.items():
        setattr(version, name, value)
    return locked


def version_recertify(*, actor, version: ModelVersion, recertify_by, detail: dict | None = None) -> ModelVersion:
    """Renew a version's certification: a new re-certification date, status
    untouched (the review service decides when; this records it)."""
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if locked.status not in (ModelVersion.Status.APPROVED, ModelVersion.Status.DEPLOYED):
            raise Conflict(f"{locked} is {locked.status}; only an approved or deployed version can be re-certified.")
        before = locked.recertify_by
        locked.recertify_by = recertify_by
        locked.save(update_fields=["recertify_by"])
        record_event(
            actor=actor,
            action=AuditAction.VERSION_RECERTIFY,
            obj=locked,
            changes={"before": {"recertify_by": before}, "after": {"recertify_by": recertify_by}},
            detail={"status": locked.status, **(detail or {})},
        )
    version.recertify_by = locked.recertify_by
    return locked


def dataset_upload_precheck(*, actor) -> None:
    """Refuse (and record it) before the body of an upload is even read: a
    caller who may not upload must not make the server stream a file to disk."""
    if not (actor.is_authenticated and actor.has_perm("registry.add_dataset")):
        record_refusal(
            actor=actor, action=AuditAction.DATASET_CREATE, reason="not permitted", object_type="registry.dataset"
        )
        raise NotPermitted("Only engineers may upload datasets.")


def dataset_create(*, actor, name: str, upload: UploadedArtifact, description: str = "") -> Dataset:
    from django.conf import settings

    refusal = {"object_type": "registry.dataset", "object_label": str(name)[:100]}
    with _upload_attempt(actor=actor, action=AuditAction.DATASET_CREATE, upload=upload, refusal=refusal) as attempt:
        if not (actor.is_authenticated and actor.has_perm("registry.add_dataset")):
            raise NotPermitted("Only engineers may upload datasets.")
        _check_name(name, what="dataset")
        limits = settings.GLASSBOX_UPLOAD_LIMITS
        if upload.size > limits["max_dataset_bytes"]:
            raise InvalidInput(f"Datasets are at most {limits['max_dataset_bytes']} bytes.")
        parsed = parse_dataset(upload.path, filename=upload.filename, max_rows=limits["max_dataset_rows"])
        key = artifact_key(upload.sha256, parsed.format, kind="datasets")
        attempt.store(key)
        with transaction.atomic():
            dataset = Dataset.objects.create(
                name=name,
                description=description,
                format=parsed.format,
                sha256=upload.sha256,
                size=upload.size,
                row_count=len(parsed.rows),
                labels=parsed.labels,
                storage_key=key,
                created_by=actor,
            )
            record_event(
                actor=actor,
                action=AuditAction.DATASET_CREATE,
                obj=dataset,
                changes={
                    "after": {"name": name, "sha256": upload.sha256, "size": upload.size, "rows": len(parsed.rows)}
                },
            )
        return dataset


def artifact_refusal_record(*, kind: str, key: str, sha256: str, found: str) -> list:
    """Record that this process refused a stored file whose bytes do not hash
    to its registered digest: one `artifact.refused` event per version (or
    dataset) registered under that digest, in a transaction of its own (the
    load that found it fails). The platform is the actor."""
    import os

    from django.conf import settings

    rows = (
        list(Dataset.objects.filter(sha256=sha256)[:20])
        if kind == "datasets"
        else list(ModelVersion.objects.filter(artifact_sha256=sha256).select_related("model")[:20])
    )
    detail = {"key": key, "registered_sha256": sha256, "found_sha256": found, "pid": os.getpid()}
    detail["data_dir"] = str(settings.DATA_DIR)
    events = []
    with transaction.atomic():
        for row in rows or [None]:
            events.append(
                record_event(
                    actor=None,
                    action=AuditAction.ARTIFACT_REFUSED,
                    obj=row,
                    object_type="" if row else f"registry.{kind}",
                    object_label="" if row else key,
                    detail=detail,
                )
            )
    return events


# --- editing and archiving a model; editing a version's card ------------------------------

_TIER_RANK = {RegisteredModel.RiskTier.LOW: 1, RegisteredModel.RiskTier.MEDIUM: 2, RegisteredModel.RiskTier.HIGH: 3}


def model_update(
    *, actor, model: RegisteredModel, description: str | None = None, risk_tier: str | None = None
) -> RegisteredModel:
    """Change a model's description (its team's engineers and maintainers, and
    admins) and/or its risk tier (admins only), in one audited event with the
    old and new values. Raising the tier opens a re-certification round of
    each approved or deployed version under the new tier's bar; they keep
    their status, and keep serving, meanwhile. Lowering it opens nothing."""
    try:
        if description is None and risk_tier is None:
            raise InvalidInput("Send description and/or risk_tier (or team, to move the model).")
        if description is not None and not model.access_of(actor).develop:
            raise NotPermitted(f"Only engineers of team {model.team} may edit the description of {model.name}.")
        if risk_tier is not None:
            if not is_admin(actor):
                raise NotPermitted("Only admins may change a model's risk tier.")
            if risk_tier not in RegisteredModel.RiskTier.values:
                raise InvalidInput(
                    f"risk_tier must be one of {', '.join(RegisteredModel.RiskTier.values)}.", field="risk_tier"
                )
        if description is not None and len(description) > 10_000:
            raise InvalidInput("description is longer than 10000 characters.", field="description")
        return _model_update(actor=actor, model=model, description=description, risk_tier=risk_tier)
    except GlassboxError as exc:
        record_refusal(
            actor=actor,
            action=AuditAction.MODEL_UPDATE,
            reason=exc.message,
            obj=model,
            detail={
                "fields": [
                    name
                    for name, value in (("description", description), ("risk_tier", risk_tier))
                    if value is not None
                ],
                "status_code": exc.status_code,
            },
        )
        raise


@transaction.atomic
def _model_update(*, actor, model: RegisteredModel, description: str | None, risk_tier: str | None) -> RegisteredModel:
    from governance.services import review_recertify_for_risk_raise

    locked = RegisteredModel.objects.select_for_update().select_related("team", "created_by").get(pk=model.pk)
    wanted = {"description": description, "risk_tier": risk_tier}
    changed = {name: value for name, value in wanted.items() if value is not None and getattr(locked, name) != value}
    if not changed:
        return locked
    before = {name: getattr(locked, name) for name in changed}
    for name, value in changed.items():
        setattr(locked, name, value)
    locked.save(update_fields=list(changed))
    raised = "risk_tier" in changed and _TIER_RANK[risk_tier] > _TIER_RANK[before["risk_tier"]]
    rounds = []
    if raised:
        live = locked.versions.filter(status__in=[ModelVersion.Status.APPROVED, ModelVersion.Status.DEPLOYED])
        for version in live.select_related("model").order_by("number"):
            review = review_recertify_for_risk_raise(actor=actor, version=version, from_tier=before["risk_tier"])
            if review is not None:
                rounds.append({"version": version.number, "review": review.pk})
    record_event(
        actor=actor,
        action=AuditAction.MODEL_UPDATE,
        obj=locked,
        changes={"before": before, "after": changed},
        detail={"recertification_rounds": rounds} if raised else {},
    )
    for name, value in changed.items():
        setattr(model, name, value)
    return locked


def version_card_update(*, actor, version: ModelVersion, **card: str) -> ModelVersion:
    """Edit a version's model card (description, intended use, limitations,
    training and evaluation data) while it is still `registered`: what
    reviewers read must not change under them once it is submitted."""
    try:
        if not version.model.can_receive_version_from(actor):
            raise NotPermitted(f"Only engineers of team {version.model.team} may edit the card of {version}.")
        unknown = set(card) - set(CARD_FIELDS)
        if unknown:
            raise InvalidInput(f"Unknown model-card fields: {', '.join(sorted(unknown))}.")
        if not card:
            raise InvalidInput(f"Send at least one model-card field: {', '.join(CARD_FIELDS)}.")
        with transaction.atomic():
            locked = ModelVersion.objects.select_for_update().select_related("model").get(pk=version.pk)
            if locked.status != ModelVersion.Status.REGISTERED:
                raise Conflict(
                    f"{locked} is {locked.status}; its card can only be edited while it is registered "
                    "(upload a new version to change what reviewers read).",
                    code="version_not_editable",
                    current_status=locked.status,
                )
            changed = {name: value for name, value in card.items() if getattr(locked, name) != value}
            if changed:
                before = {name: getattr(locked, name) for name in changed}
                for name, value in changed.items():
                    setattr(locked, name, value)
                locked.save(update_fields=list(changed))
                record_event(
                    actor=actor,
                    action=AuditAction.VERSION_CARD_UPDATE,
                    obj=locked,
                    changes={"before": before, "after": changed},
                )
        return locked
    except GlassboxError as exc:
        record_refusal(
            actor=actor,
            action=AuditAction.VERSION_CARD_UPDATE,
            reason=exc.message,
            obj=version,
            detail={"fields": sorted(card)[:10], "status_code": exc.status_code},
        )
        raise


def model_archive(*, actor, model: RegisteredModel) -> RegisteredModel:
    """Archive a model (admins): it serves nothing and takes no new versions,
    reviews or rollouts; everything it has stays readable. A model with an
    active rollout is refused (finish or abort the rollout first)."""
    return _model_archive_set(actor=actor, model=model, archive=True)


def model_unarchive(*, actor, model: RegisteredModel) -> RegisteredModel:
    """Undo an archive (admins): serving and the workflow resume as they were."""
    return _model_archive_set(actor=actor, model=model, archive=False)


def _model_archive_set(*, actor, model: RegisteredModel, archive: bool) -> RegisteredModel:
    from django.utils import timezone

    from rollouts.models import Rollout
    from rollouts.routing import clear_routing_cache

    action = AuditAction.MODEL_ARCHIVE if archive else AuditAction.MODEL_UNARCHIVE
    try:
        if not is_admin(actor):
            raise NotPermitted(f"Only admins may {'archive' if archive else 'unarchive'} models.")
        with transaction.atomic():
            # The model row's lock orders this against a rollout start, which
            # takes it too and refuses an archived model.
            locked = RegisteredModel.objects.select_for_update().select_related("team", "created_by").get(pk=model.pk)
            if archive and locked.archived_at is None:
                active = Rollout.objects.filter(model=locked, status__in=Rollout.ACTIVE_STATUSES).first()
                if active is not None:
                    raise Conflict(
                        f"Rollout #{active.pk} of {locked.name} is active; promote or abort it before archiving.",
                        code="rollout_active",
                        rollout=active.pk,
                    )
            before = locked.archived_at
            if archive == (before is None):
                locked.archived_at = timezone.now() if archive else None
                locked.save(update_fields=["archived_at"])
                record_event(
                    actor=actor,
                    action=action,
                    obj=locked,
                    changes={"before": {"archived_at": before}, "after": {"archived_at": locked.archived_at}},
                )
                # This process's serving caches see it at once; others within their TTL (a second).
                transaction.on_commit(clear_routing_cache)
    except GlassboxError as exc:
        record_refusal(
            actor=actor, action=action, reason=exc.message, obj=model, detail={"status_code": exc.status_code}
        )
        raise
    model.archived_at = locked.archived_at
    return locked
