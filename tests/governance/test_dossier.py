"""The per-version compliance dossier: a printable page and the same facts
as a JSON download."""

import json

from django.conf import settings

from registry.models import ModelVersion
from tests.conftest import page_client_for
from tests.governance.reviewing import decide, submitted_version


def dossier_url(version, suffix: str = "dossier/") -> str:
    return f"/models/{version.model.name}/versions/{version.number}/{suffix}"


def reviewed_version(engineer, reviewer, reviewer2) -> ModelVersion:
    version = submitted_version(uploader=engineer, risk_tier="medium", name="zh-sentiment")
    ModelVersion.objects.filter(pk=version.pk).update(
        intended_use="评论情感分类", limitations="only product reviews", metrics={"accuracy": 0.87, "f1": 0.85}
    )
    decide(reviewer, version, "approve", "calibrated on the holdout")
    decide(reviewer2, version, "approve", "agree; watch sarcasm")
    version.refresh_from_db()
    return version


def test_dossier_page_holds_card_metrics_digest_uploader_and_review_history(engineer, reviewer, reviewer2):
    version = reviewed_version(engineer, reviewer, reviewer2)

    response = page_client_for(reviewer).get(dossier_url(version))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Compliance dossier: zh-sentiment v1" in page
    assert "评论情感分类" in page and "only product reviews" in page
    assert "accuracy" in page and "0.87" in page
    assert version.artifact_sha256 in page
    assert "erin" in page
    assert "calibrated on the holdout" in page and "agree; watch sarcasm" in page
    assert f"Re-certify by</dt><dd>{version.recertify_by:%Y-%m-%d}" in page
    assert "Explanation reports" in page and "None yet: no explanation report" in page
    assert "Rollout history" in page and "None yet: this version has not been rolled out" in page


def test_dossier_json_download_has_the_same_facts(engineer, reviewer, reviewer2):
    version = reviewed_version(engineer, reviewer, reviewer2)
    client = page_client_for(reviewer)

    response = client.get(dossier_url(version, "dossier.json"))

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="zh-sentiment-v1-dossier.json"'
    data = json.loads(response.content)
    assert data["model"]["name"] == "zh-sentiment" and data["model"]["risk_tier"] == "medium"
    assert data["version"]["status"] == "approved" and data["version"]["uploaded_by"] == "erin"
    assert data["version"]["recertify_by"] == version.recertify_by.isoformat()
    assert data["card"]["intended_use"] == "评论情感分类"
    assert data["metrics"] == {"accuracy": 0.87, "f1": 0.85}
    assert data["artifact"]["sha256"] == version.artifact_sha256
    [review] = data["reviews"]
    assert review["status"] == "approved" and review["opened_by"] == "erin" and review["required_approvals"] == 2
    assert [(d["reviewer"], d["decision"], d["comment"]) for d in review["decisions"]] == [
        ("rita", "approve", "calibrated on the holdout"),
        ("ravi", "approve", "agree; watch sarcasm"),
    ]
    assert data["explanation_reports"] == [] and data["rollouts"] == []
    assert "audit_events" not in data  # reviewers do not read the raw audit trail
    # ?format=json is the same download.
    same = json.loads(client.get(dossier_url(version), {"format": "json"}).content)
    assert {k: v for k, v in same.items() if k != "generated_at"} == {
        k: v for k, v in data.items() if k != "generated_at"
    }


def test_managers_dossier_includes_the_versions_audit_trail(engineer, reviewer, reviewer2, manager):
    version = reviewed_version(engineer, reviewer, reviewer2)
    decide(reviewer, version, "approve")  # refused: already approved

    data = json.loads(page_client_for(manager).get(dossier_url(version, "dossier.json")).content)
    page = page_client_for(manager).get(dossier_url(version)).content.decode()

    assert [(e["action"], e["outcome"]) for e in data["audit_events"]] == [
        ("version.submit", "ok"),
        ("review.open", "ok"),
        ("review.approve", "ok"),
        ("review.approve", "ok"),
        ("review.close", "ok"),
        ("version.approve", "ok"),
        ("review.approve", "denied"),
    ]
    assert all(len(e["hash"]) == 64 for e in data["audit_events"])
    assert "Audit trail of this version" in page and "version.approve" in page


def test_dossier_prints_with_a_print_stylesheet(engineer, reviewer, reviewer2):
    version = reviewed_version(engineer, reviewer, reviewer2)

    page = page_client_for(reviewer).get(dossier_url(version)).content.decode()

    assert 'class="dossier"' in page and "glassbox.css" in page and 'class="no-print"' in page
    css = (settings.BASE_DIR / "static" / "glassbox.css").read_text()
    print_rules = css[css.index("@media print {\n") :]
    assert ".no-print" in print_rules and ".dossier section" in print_rules and "break-inside: avoid" in print_rules


def test_dossier_of_a_version_never_reviewed(engineer):
    from tests.governance.reviewing import new_version

    version = new_version(uploader=engineer)

    data = json.loads(page_client_for(engineer).get(dossier_url(version, "dossier.json")).content)

    assert data["reviews"] == [] and data["version"]["status"] == "registered"
    assert "Never submitted for review." in page_client_for(engineer).get(dossier_url(version)).content.decode()


def test_dossier_of_an_unknown_version_is_404(engineer, reviewer):
    version = submitted_version(uploader=engineer)

    assert page_client_for(reviewer).get(f"/models/{version.model.name}/versions/7/dossier/").status_code == 404
    assert page_client_for(reviewer).get("/models/nope/versions/1/dossier.json").status_code == 404
