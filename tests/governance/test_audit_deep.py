"""`audit_verify --deep` and the scheduled deep check: the digests the trail
recorded of report results, dataset files and artifacts are recomputed from
what is stored, and each tampered one is named (never repaired)."""

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from explanations.models import ExplanationReport
from governance import tasks
from governance.audit_integrity import checkpoint_create
from governance.models import AuditEvent, IntegrityAlert
from registry.artifacts import artifact_storage
from tests.conftest import page_client_for, upload_skops
from tests.explanations.reporting import RegisteredModelFactory, uploaded_dataset
from tests.governance.reviewing import decide
from tests.governance.test_decision_evidence import succeeded


def deep_verify() -> str:
    """Run the command; its output when intact, the CommandError text otherwise."""
    try:
        call_command("audit_verify", "--deep", "--workers", "1", stdout=(out := _Sink()))
    except CommandError as exc:
        return f"BROKEN\n{exc}"
    return out.text


class _Sink:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass


@pytest.fixture
def evidence(engineer, reviewer, demo_models):
    """A model version uploaded for real, a dataset (unique bytes, deleted
    afterwards), a succeeded report on it and an approval made on it."""
    RegisteredModelFactory(name="zh-deep", created_by=engineer)
    version = upload_skops(uploader=engineer, model_name="zh-deep", skops_path=demo_models["sklearn_skops"])
    from governance.services import review_submit

    review_submit(actor=engineer, version=version)
    dataset = uploaded_dataset(uploader=engineer, rows=[(f"样本{uuid.uuid4().hex}", "positive")], name="deep-set")
    report = succeeded(version, engineer, dataset=dataset)
    assert decide(reviewer, version, "approve", "fine").status_code == 201
    yield {"version": version, "dataset": dataset, "report": report}
    artifact_storage().delete(dataset.storage_key)


def stored_path(key: str) -> Path:
    return Path(artifact_storage().path(key))


def test_deep_verification_passes_on_untouched_evidence(evidence):
    out = deep_verify()

    assert "The audit trail is intact." in out
    assert "recomputed 1 report digests, 1 dataset files and 1 artifacts" in out


def test_an_altered_report_row_is_named(evidence):
    report = evidence["report"]
    results = dict(report.results)
    results["texts"][0]["values"]["positive"][0] = 0.99
    ExplanationReport.objects.filter(pk=report.pk).update(results=results)

    out = deep_verify()

    assert out.startswith("BROKEN")
    assert f"explanation report #{report.pk}: results digest" in out
    event = AuditEvent.objects.get(action="explanation.succeed", object_id=str(report.pk))
    assert f"in event #{event.pk}" in out


def test_an_altered_row_with_a_recomputed_digest_column_is_still_named(evidence):
    from governance.audit import content_digest

    report = evidence["report"]
    ExplanationReport.objects.filter(pk=report.pk).update(
        results={"texts": []}, results_sha256=content_digest({"texts": []})
    )

    assert f"explanation report #{report.pk}: results digest" in deep_verify()


def test_a_deleted_report_is_named(evidence):
    report = evidence["report"]
    ExplanationReport.objects.filter(pk=report.pk).delete()

    out = deep_verify()

    assert f"explanation report #{report.pk}: is missing" in out


def test_a_replaced_dataset_file_is_named(evidence):
    dataset = evidence["dataset"]
    stored_path(dataset.storage_key).write_text("text,label\n替换,negative\n", encoding="utf-8")

    out = deep_verify()

    assert f"dataset #{dataset.pk} (deep-set): file {dataset.storage_key} has SHA-256" in out


def test_an_artifact_with_one_byte_changed_is_named_and_nothing_is_repaired(evidence):
    version = evidence["version"]
    path = stored_path(version.artifact_key)
    original = path.read_bytes()
    try:
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        path.write_bytes(bytes(changed))

        out = deep_verify()

        assert f"artifact of zh-deep v{version.number}: file {version.artifact_key} has SHA-256" in out
        assert path.read_bytes() == bytes(changed)  # left as found
    finally:
        path.write_bytes(original)


def test_the_scheduled_check_raises_one_alert_per_mismatch_and_the_dashboard_shows_it(evidence, manager):
    dataset = evidence["dataset"]
    original = stored_path(dataset.storage_key).read_bytes()
    stored_path(dataset.storage_key).write_text("text,label\n替换,negative\n", encoding="utf-8")

    assert tasks.deep_verify() == 1
    assert tasks.deep_verify() == 0  # still open: not raised twice

    alert = IntegrityAlert.objects.get()
    assert alert.subject == f"dataset #{dataset.pk} (deep-set)" and alert.cleared_at is None
    event = AuditEvent.objects.get(action="audit.integrity_alert")
    assert event.detail["subject"] == alert.subject
    page = page_client_for(manager).get("/dashboard/").content.decode()
    assert "Evidence integrity" in page and f"dataset #{dataset.pk} (deep-set)" in page

    # Restored from a backup by a person: the next check clears the alert, on the trail.
    stored_path(dataset.storage_key).write_bytes(original)
    assert tasks.deep_verify() == 0
    alert.refresh_from_db()
    assert alert.cleared_at is not None
    assert AuditEvent.objects.filter(action="audit.integrity_cleared", object_id=str(alert.pk)).count() == 1


def _verifier():
    path = Path(__file__).resolve().parents[2] / "scripts" / "verify_dossier.py"
    spec = importlib.util.spec_from_file_location("verify_dossier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dossier_export_alone_proves_its_events_against_a_signed_checkpoint(settings, evidence, manager, tmp_path):
    settings.AUDIT_CHECKPOINT_KEY = "k" * 40
    version = evidence["version"]
    checkpoint = checkpoint_create(actor=manager)
    response = page_client_for(manager).get(f"/models/zh-deep/versions/{version.number}/dossier.json")
    # What the auditor holds: the downloaded file and the signed checkpoint, nothing else.
    dossier = json.loads(response.content.decode())
    verifier = _verifier()

    assert verifier.verify_dossier(dossier, checkpoint, key=b"k" * 40) == []
    assert verifier.cited_after_checkpoint(dossier, checkpoint) == []
    # The script itself, in an isolated interpreter that sees neither Glassbox nor its database.
    (tmp_path / "dossier.json").write_bytes(response.content)
    (tmp_path / "checkpoint.json").write_text(json.dumps(checkpoint))
    script = Path(__file__).resolve().parents[2] / "scripts" / "verify_dossier.py"
    run = subprocess.run(
        [sys.executable, "-I", str(script), "dossier.json", "checkpoint.json"],
        cwd=tmp_path,
        env={"AUDIT_CHECKPOINT_KEY": "k" * 40},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "belong to the chain up to checkpoint event" in run.stdout and "signature checked" in run.stdout
    decision = dossier["reviews"][0]["decisions"][0]
    assert decision["evidence"]["reports"][0]["id"] == evidence["report"].pk
    assert decision["event"]["id"] in {event["id"] for event in dossier["chain"]["events"]}
    assert dossier["datasets"][0]["sha256"] == evidence["dataset"].sha256

    # A forged snapshot, a forged digest and a forged checkpoint are each caught.
    forged = json.loads(json.dumps(dossier))
    forged["reviews"][0]["decisions"][0]["evidence"]["reports"][0]["results_sha256"] = "0" * 64
    forged["explanation_reports"][0]["results_sha256"] = "1" * 64
    problems = verifier.verify_dossier(forged, checkpoint, key=b"k" * 40)
    assert any("evidence snapshot is not the decision's" in problem for problem in problems)
    assert any("digests are not the report's" in problem for problem in problems)
    assert verifier.verify_dossier(dossier, {**checkpoint, "hash": "f" * 64}, key=b"k" * 40)
    rewritten = json.loads(json.dumps(dossier))
    rewritten["chain"]["events"][0]["actor_username"] = "someone-else"
    assert any("does not hash to its hash" in problem for problem in verifier.verify_dossier(rewritten, checkpoint))


def test_numbers_the_database_rewrites_still_verify(engineer):
    from explanations import services as report_services
    from tests.explanations.reporting import make_report
    from tests.governance.reviewing import submitted_version

    version = submitted_version(uploader=engineer)
    report = make_report(version=version, requested_by=engineer, status="running")
    odd = {"big": 1e17, "negative_zero": -0.0, "tiny": 1.5e-7, "nan": float("nan"), "text": "空\x00字"}
    report_services.report_succeed(report_id=report.pk, results=odd, fidelity={}, timings={})
    from governance.audit_deep import verify_deep

    result = verify_deep()
    # (The factory-made version has no artifact in the store: only the report matters here.)
    assert result.reports == 1
    assert [m for m in result.mismatches if m.subject.startswith("explanation report")] == []
