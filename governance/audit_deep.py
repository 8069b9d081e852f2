"""Deep verification: the evidence the trail points at still is what the trail says.

The hash chain (governance.audit_integrity) proves the events were not
rewritten. The events in turn record digests of what they are about: the
SHA-256 of each succeeded report's results and fidelity blocks
(explanation.succeed), of each dataset file (dataset.create) and of each
model artifact (version.create), and every decision's evidence snapshot
(review.approve / review.reject) repeats the digests of the reports it was
made on. verify_deep recomputes each digest from what is stored now - the
report rows, the dataset files and artifacts in the store - and names every
one that no longer matches, the first one first. It repairs nothing.
"""

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.db.models import Q

from governance.audit import canonical_json, content_digest
from governance.audit_actions import AuditAction
from governance.models import AuditEvent

_READ_BYTES = 4 * 1024 * 1024
_REPORT_BATCH = 200


@dataclass(frozen=True)
class Mismatch:
    subject: str  # "explanation report #12", "dataset #3", "artifact of zh-sentiment v1"
    reason: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.reason}"


@dataclass
class DeepResult:
    reports: int = 0
    datasets: int = 0
    artifacts: int = 0
    artifact_bytes: int = 0
    decisions: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)


def _ok_events(action: AuditAction) -> Iterator[tuple[int, str, dict, dict]]:
    yield from (
        AuditEvent.objects.filter(action=action, outcome=AuditEvent.Outcome.OK)
        .order_by("id")
        .values_list("id", "object_id", "changes", "detail")
        .iterator(chunk_size=2000)
    )


def _recorded_report_digests() -> dict[int, tuple[int, str, str]]:
    """report id -> (event id, results digest, fidelity digest) as the trail recorded them."""
    recorded = {}
    for event_id, object_id, _, detail in _ok_events(AuditAction.EXPLANATION_SUCCEED):
        if detail.get("results_sha256"):
            recorded[int(object_id)] = (event_id, detail["results_sha256"], detail.get("fidelity_sha256", ""))
    return recorded


def _recorded_file_digests(action: AuditAction) -> dict[int, tuple[int, str]]:
    recorded = {}
    for event_id, object_id, changes, _ in _ok_events(action):
        sha256 = (changes.get("after") or {}).get("sha256")
        if sha256 and object_id:
            recorded[int(object_id)] = (event_id, sha256)
    return recorded


def _stored_digest_function():
    """content_digest, minus its round trip through what the database would
    store where the value was just read from PostgreSQL: jsonb hands back no
    NUL, no -0.0 and no float of 1e16 or more, so the round trip changes
    nothing there, and skipping it halves the cost of a report."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return content_digest

    def digest(value) -> str:
        return hashlib.sha256(canonical_json(value).encode()).hexdigest()

    return digest


def _check_reports(result: DeepResult) -> None:
    from explanations.models import ExplanationReport

    content_digest = _stored_digest_function()

    recorded = _recorded_report_digests()
    seen: set[int] = set()
    rows = (
        ExplanationReport.objects.filter(Q(pk__in=list(recorded)) | ~Q(results_sha256=""))
        .order_by("id")
        .values_list("id", "status", "results", "fidelity", "results_sha256", "fidelity_sha256")
        .iterator(chunk_size=_REPORT_BATCH)
    )
    for report_id, status, results, fidelity, results_column, fidelity_column in rows:
        seen.add(report_id)
        result.reports += 1
        subject = f"explanation report #{report_id}"
        results_now, fidelity_now = content_digest(results), content_digest(fidelity)
        event_id, results_recorded, fidelity_recorded = recorded.get(report_id, (None, results_column, fidelity_column))
        where = f"event #{event_id}" if event_id else "the report row (no explanation.succeed event holds one)"
        if status != ExplanationReport.Status.SUCCEEDED:
            result.mismatches.append(Mismatch(subject, f"is {status}, but {where} recorded its success"))
        elif results_now != results_recorded:
            result.mismatches.append(
                Mismatch(
                    subject, f"results digest {results_now[:16]}… differs from {results_recorded[:16]}… in {where}"
                )
            )
        elif fidelity_recorded and fidelity_now != fidelity_recorded:
            result.mismatches.append(
                Mismatch(
                    subject, f"fidelity digest {fidelity_now[:16]}… differs from {fidelity_recorded[:16]}… in {where}"
                )
            )
        elif (results_column, fidelity_column) != (results_recorded, fidelity_recorded):
            result.mismatches.append(Mismatch(subject, f"the digests on the row differ from those in {where}"))
    for report_id in sorted(set(recorded) - seen):
        event_id = recorded[report_id][0]
        result.mismatches.append(
            Mismatch(f"explanation report #{report_id}", f"is missing (its success is event #{event_id})")
        )
    _check_decision_citations(result, recorded, seen)


def _check_decision_citations(result: DeepResult, recorded: dict, present: set[int]) -> None:
    """Each decision's snapshot names report digests: they must be the ones the
    report's own success event recorded, and the report must still exist."""
    for action in (AuditAction.REVIEW_APPROVE, AuditAction.REVIEW_REJECT):
        for event_id, object_id, _, detail in _ok_events(action):
            evidence = detail.get("evidence")
            if not isinstance(evidence, dict):
                continue  # decided before evidence was bound
            result.decisions += 1
            for entry in evidence.get("reports", []):
                report_id = entry.get("id")
                subject = f"explanation report #{report_id}"
                if report_id not in present and report_id not in recorded:
                    result.mismatches.append(
                        Mismatch(subject, f"is missing (decision #{object_id}, event #{event_id}, was made on it)")
                    )
                elif report_id in recorded and entry.get("results_sha256") not in ("", recorded[report_id][1]):
                    result.mismatches.append(
                        Mismatch(subject, f"decision #{object_id} (event #{event_id}) cites another results digest")
                    )


def _file_sha256(key: str) -> tuple[str | None, int]:
    from registry.artifacts import artifact_storage, storage_errors

    digest = hashlib.sha256()
    size = 0
    try:
        with storage_errors(), artifact_storage().open(key, "rb") as handle:
            while chunk := handle.read(_READ_BYTES):
                digest.update(chunk)
                size += len(chunk)
    except (FileNotFoundError, OSError):
        return None, 0
    return digest.hexdigest(), size


def _check_files(result: DeepResult, rows: list[tuple[int, str, str, str]], recorded: dict, workers: int) -> int:
    """rows: (id, subject, storage key, digest on the row). Hashes files in
    threads (hashlib releases the GIL on large buffers). Returns bytes read."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        hashed = list(pool.map(lambda row: _file_sha256(row[2]), rows))
    total = 0
    for (row_id, subject, key, row_digest), (now, size) in zip(rows, hashed, strict=True):
        total += size
        event_id, recorded_digest = recorded.get(row_id, (None, row_digest))
        where = f"event #{event_id}" if event_id else "its row (no creation event holds one)"
        if now is None:
            result.mismatches.append(Mismatch(subject, f"file {key} is missing from the store"))
        elif now != recorded_digest:
            result.mismatches.append(
                Mismatch(subject, f"file {key} has SHA-256 {now[:16]}…, {where} recorded {recorded_digest[:16]}…")
            )
        elif row_digest != recorded_digest:
            result.mismatches.append(Mismatch(subject, f"the digest on its row differs from the one in {where}"))
    return total


def verify_deep(*, workers: int = 1) -> DeepResult:
    """Recompute every bound digest; mismatches in order: reports (and the
    decisions citing them), datasets, artifacts, each by id."""
    from registry.models import Dataset, ModelVersion

    result = DeepResult()
    _check_reports(result)
    datasets = [
        (pk, f"dataset #{pk} ({name})", key, sha256)
        for pk, name, key, sha256 in Dataset.objects.order_by("id").values_list("id", "name", "storage_key", "sha256")
    ]
    result.datasets = len(datasets)
    _check_files(result, datasets, _recorded_file_digests(AuditAction.DATASET_CREATE), workers)
    versions = [
        (pk, f"artifact of {model} v{number}", key, sha256)
        for pk, model, number, key, sha256 in ModelVersion.objects.order_by("id").values_list(
            "id", "model__name", "number", "artifact_key", "artifact_sha256"
        )
    ]
    result.artifacts = len(versions)
    result.artifact_bytes = _check_files(result, versions, _recorded_file_digests(AuditAction.VERSION_CREATE), workers)
    return result


def integrity_alerts_raise(*, mismatches: list[Mismatch], actor=None) -> list:
    """One open IntegrityAlert (and one audit event) per subject that does not
    match; a subject already alerted on stays as it is. Open alerts whose
    subject matches again (someone restored it) are cleared, on the trail
    too. Nothing is repaired here."""
    from django.db import transaction
    from django.utils import timezone

    from governance.audit import record_event
    from governance.models import IntegrityAlert

    raised = []
    for mismatch in mismatches:
        with transaction.atomic():
            subject = mismatch.subject[:200]
            if IntegrityAlert.objects.select_for_update().filter(subject=subject, cleared_at__isnull=True).exists():
                continue
            alert = IntegrityAlert.objects.create(subject=subject, message=str(mismatch)[:1000])
            record_event(
                actor=actor,
                action=AuditAction.AUDIT_INTEGRITY_ALERT,
                obj=alert,
                detail={"subject": subject, "reason": mismatch.reason[:500]},
            )
            raised.append(alert)
    failing = {mismatch.subject[:200] for mismatch in mismatches}
    with transaction.atomic():
        for alert in IntegrityAlert.objects.select_for_update().filter(cleared_at__isnull=True):
            if alert.subject in failing:
                continue
            alert.cleared_at = timezone.now()
            alert.save(update_fields=["cleared_at"])
            record_event(
                actor=actor,
                action=AuditAction.AUDIT_INTEGRITY_CLEARED,
                obj=alert,
                detail={"subject": alert.subject},
            )
    return raised
