"""Succeeded explanation reports are the evidence the approval policy asks
for, and they appear on the review page and in the dossier."""

import pytest

from explanations.selectors import succeeded_methods
from governance.models import ReviewRequest
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, page_client_for
from tests.explanations.reporting import make_report


@pytest.fixture
def high_risk_version(engineer):
    return ModelVersionFactory(model=RegisteredModelFactory(name="credit-zh", risk_tier="high", created_by=engineer))


def submit(api, user, version):
    response = api(user).post(f"/api/v1/models/{version.model.name}/versions/{version.number}/submit/")
    assert response.status_code in (200, 201), response.json()
    return ReviewRequest.objects.get(version=version)


def test_only_succeeded_reports_count_as_evidence(engineer, high_risk_version):
    make_report(version=high_risk_version, requested_by=engineer, method="shap")
    make_report(version=high_risk_version, requested_by=engineer, method="pfi", status="failed")
    make_report(version=high_risk_version, requested_by=engineer, method="lime", status="running")
    assert succeeded_methods(version=high_risk_version) == {"shap"}


def test_a_high_risk_version_with_shap_and_pfi_reports_can_be_approved(
    api, engineer, reviewer, reviewer2, high_risk_version
):
    review = submit(api, engineer, high_risk_version)
    assert review.missing_evidence() == ["shap", "pfi"]
    reports = [
        make_report(version=high_risk_version, requested_by=reviewer, method=method) for method in ("shap", "pfi")
    ]
    assert review.missing_evidence() == []
    path = f"/api/v1/models/{high_risk_version.model.name}/versions/{high_risk_version.number}/decisions/"
    for user in (reviewer, reviewer2):
        # The high-risk policy asks each approver to open the evidence first.
        for report in reports:
            assert page_client_for(user).get(f"/explanations/{report.pk}/").status_code == 200
        response = api(user).post(path, {"decision": "approve", "comment": "evidence read"}, format="json")
        assert response.status_code == 201, response.json()
    high_risk_version.refresh_from_db()
    assert high_risk_version.status == "approved"


def test_review_page_and_dossier_list_the_reports(api, engineer, reviewer, high_risk_version):
    submit(api, engineer, high_risk_version)
    shap = make_report(version=high_risk_version, requested_by=reviewer, method="shap")
    failed = make_report(version=high_risk_version, requested_by=reviewer, method="pfi", status="failed")
    client = page_client_for(reviewer)
    base = f"/models/{high_risk_version.model.name}/versions/{high_risk_version.number}"

    review_page = client.get(f"{base}/review/").content.decode()
    assert f'href="/explanations/{shap.pk}/"' in review_page and f'href="/explanations/{failed.pk}/"' not in review_page
    assert "comprehensiveness AOPC 0.300 (random 0.030)" in review_page

    dossier = client.get(f"{base}/dossier/").content.decode()
    assert f'href="/explanations/{shap.pk}/"' in dossier and f'href="/explanations/{failed.pk}/"' in dossier
    data = client.get(f"{base}/dossier.json").json()
    assert [(r["method"], r["status"]) for r in data["explanation_reports"]] == [
        ("pfi", "failed"),
        ("shap", "succeeded"),
    ]


def test_a_policy_may_ask_for_integrated_gradients(api, engineer, reviewer, high_risk_version, settings):
    settings.GLASSBOX_APPROVAL_POLICY = {
        **settings.GLASSBOX_APPROVAL_POLICY,
        "high": {**settings.GLASSBOX_APPROVAL_POLICY["high"], "evidence": ["ig"]},
    }
    review = submit(api, engineer, high_risk_version)
    assert review.missing_evidence() == ["ig"]
    make_report(version=high_risk_version, requested_by=reviewer, method="ig")
    assert review.missing_evidence() == []
