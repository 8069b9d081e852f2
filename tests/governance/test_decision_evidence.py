"""Every decision binds the evidence it was made on: report digests in the
chain, the evidence snapshot on the decision and in its event, which reports
the reviewer opened, and the high-tier rule that the approver opens them."""

import hashlib

from explanations import services as report_services
from explanations.models import ExplanationReport
from governance.audit import content_digest
from governance.models import AuditEvent, Decision, ReportOpen
from registry.artifacts import artifact_storage
from tests.conftest import api_client_for, page_client_for
from tests.explanations.reporting import FIDELITY, PFI_RESULTS, local_results, make_report, uploaded_dataset
from tests.governance.reviewing import decide, submitted_version

ROWS = [("这个手机很好", "positive"), ("质量太差了", "negative")]


def succeeded(version, requester, *, method="shap", dataset=None) -> ExplanationReport:
    """A report that succeeds through the service the workers call."""
    report = make_report(version=version, requested_by=requester, method=method, status="running", dataset=dataset)
    results = PFI_RESULTS if method == "pfi" else local_results(["这个手机很好"], labels=tuple(version.labels))
    report_services.report_succeed(report_id=report.pk, results=results, fidelity=FIDELITY, timings={"combine": 0.1})
    report.refresh_from_db()
    return report


def test_a_succeeded_report_carries_its_digests_on_the_row_and_in_its_event(engineer):
    version = submitted_version(uploader=engineer)

    report = succeeded(version, engineer)

    assert report.results_sha256 == content_digest(report.results)
    assert report.fidelity_sha256 == content_digest(report.fidelity)
    assert len(report.results_sha256) == 64 and report.results_sha256 != report.fidelity_sha256
    event = AuditEvent.objects.get(action="explanation.succeed", object_id=str(report.pk))
    assert event.detail["results_sha256"] == report.results_sha256
    assert event.detail["fidelity_sha256"] == report.fidelity_sha256
    api = api_client_for(engineer).get(f"/api/v1/explanations/{report.pk}/").json()
    assert (api["results_sha256"], api["fidelity_sha256"]) == (report.results_sha256, report.fidelity_sha256)


def test_dataset_creation_event_carries_the_file_digest(engineer):
    dataset = uploaded_dataset(uploader=engineer, rows=ROWS, name="digest-check")

    event = AuditEvent.objects.get(action="dataset.create", object_id=str(dataset.pk))
    assert event.changes["after"]["sha256"] == dataset.sha256
    assert event.changes["after"]["size"] == dataset.size
    assert hashlib.sha256(artifact_storage().open(dataset.storage_key).read()).hexdigest() == dataset.sha256


def test_decision_snapshot_holds_every_succeeded_report_in_row_api_and_event(engineer, reviewer):
    version = submitted_version(uploader=engineer)
    dataset = uploaded_dataset(uploader=engineer, rows=ROWS, name="snapshot-set")
    shap = succeeded(version, engineer, dataset=dataset)
    pfi = succeeded(version, engineer, method="pfi", dataset=dataset)
    make_report(version=version, requested_by=engineer, method="lime", status="running")

    response = decide(reviewer, version, "approve", "explanations are convincing")

    assert response.status_code == 201, response.json()
    evidence = response.json()["evidence"]
    assert [entry["id"] for entry in evidence["reports"]] == [shap.pk, pfi.pk]
    first = evidence["reports"][0]
    assert first == {
        "id": shap.pk,
        "method": "shap",
        "params": {"seed": 0},
        "dataset": dataset.pk,
        "dataset_sha256": dataset.sha256,
        "text_count": dataset.row_count,
        "finished_at": shap.finished_at.isoformat(),
        "results_sha256": shap.results_sha256,
        "fidelity_sha256": shap.fidelity_sha256,
        "fidelity": {
            "comprehensiveness_aopc": 0.3,
            "random_comprehensiveness_aopc": 0.03,
            "additivity_max_error": 2e-9,
        },
        "opened": False,
    }
    assert evidence["opened"] == []
    decision = Decision.objects.get(pk=response.json()["id"])
    assert decision.evidence == evidence
    event = AuditEvent.objects.get(action="review.approve", outcome="ok", object_id=str(decision.pk))
    assert event.detail["evidence"] == evidence


def test_reports_made_after_a_decision_are_shown_apart(engineer, reviewer, reviewer2):
    version = submitted_version(uploader=engineer, risk_tier="medium")
    shap = succeeded(version, engineer)
    assert decide(reviewer, version, "approve", "first look").status_code == 201
    lime = succeeded(version, engineer, method="lime")

    page = page_client_for(reviewer2).get(f"/models/{version.model.name}/versions/{version.number}/review/")
    html = page.content.decode()

    assert f'decided on: <a href="/explanations/{shap.pk}/">SHAP #{shap.pk} (comp 0.30 vs random 0.03)</a>' in html
    assert (
        f'after the decision: <a href="/explanations/{lime.pk}/">LIME #{lime.pk} (comp 0.30 vs random 0.03)</a>' in html
    )
    second = decide(reviewer2, version, "approve", "both seen").json()
    assert [entry["id"] for entry in second["evidence"]["reports"]] == [shap.pk, lime.pk]
    base = f"/models/{version.model.name}/versions/{version.number}"
    decisions = page_client_for(reviewer).get(f"{base}/dossier.json").json()["reviews"][0]["decisions"]
    assert [d["after_decision"] for d in decisions] == [[lime.pk], []]
    dossier = page_client_for(reviewer).get(f"{base}/dossier/").content.decode()
    assert dossier.count('class="evidence decided-on"') == 2
    assert dossier.count('class="evidence after-decision muted"') == 1
    assert f"LIME #{lime.pk} (comp 0.30 vs random 0.03)</a></p>" in dossier


def test_reviewer_opens_are_logged_once_per_report_and_listed_in_the_decision(engineer, reviewer):
    version = submitted_version(uploader=engineer)
    shap = succeeded(version, engineer)
    pfi = succeeded(version, engineer, method="pfi")
    # Signing in is on the trail (so the clients come first); reading reports adds nothing to it.
    pages, api, uploader_pages = page_client_for(reviewer), api_client_for(reviewer), page_client_for(engineer)
    events_before = AuditEvent.objects.count()

    for _ in range(3):
        assert pages.get(f"/explanations/{shap.pk}/").status_code == 200
    assert api.get(f"/api/v1/explanations/{shap.pk}/export.csv").status_code == 200
    # The uploader reading the report is not a reviewer's open.
    assert uploader_pages.get(f"/explanations/{pfi.pk}/").status_code == 200

    opens = list(ReportOpen.objects.values_list("reviewer__username", "report_id", "via"))
    assert opens == [("rita", shap.pk, "page")]
    assert AuditEvent.objects.count() == events_before  # an access log, not chain events
    evidence = decide(reviewer, version, "approve", "read SHAP").json()["evidence"]
    assert evidence["opened"] == [shap.pk]
    assert [entry["opened"] for entry in evidence["reports"]] == [True, False]


def test_high_tier_approval_waits_until_the_approver_opened_the_required_reports(engineer, reviewer):
    version = submitted_version(uploader=engineer, risk_tier="high")
    shap = succeeded(version, engineer)
    older_pfi = succeeded(version, engineer, method="pfi")
    pfi = succeeded(version, engineer, method="pfi")
    api_client_for(reviewer).get(f"/api/v1/explanations/{shap.pk}/export.json")
    api_client_for(reviewer).get(f"/api/v1/explanations/{older_pfi.pk}/")

    refused = decide(reviewer, version, "approve", "looks fine")

    assert refused.status_code == 409
    assert refused.json()["unopened_reports"] == [pfi.pk]
    assert f"you have not opened PFI report #{pfi.pk}" in refused.json()["detail"]
    assert not Decision.objects.exists()
    denied = AuditEvent.objects.get(action="review.approve", outcome="denied")
    assert f"PFI report #{pfi.pk}" in denied.detail["reason"]

    page_client_for(reviewer).get(f"/explanations/{pfi.pk}/")
    approved = decide(reviewer, version, "approve", "looks fine")
    assert approved.status_code == 201, approved.json()
    assert approved.json()["evidence"]["opened"] == [shap.pk, older_pfi.pk, pfi.pk]


def test_a_reject_needs_no_opened_evidence_but_records_its_snapshot(engineer, reviewer):
    version = submitted_version(uploader=engineer, risk_tier="high")
    shap = succeeded(version, engineer)

    response = decide(reviewer, version, "reject", "no PFI and SHAP unread")

    assert response.status_code == 201
    assert [entry["id"] for entry in response.json()["evidence"]["reports"]] == [shap.pk]
