"""The REST API of explanation reports: request (202), read, list, cancel,
exports; who may do what; errors as JSON with a detail."""

import csv
import io
import json

import pytest

from explanations.models import ExplanationReport
from tests.explanations.reporting import SCRIPT_TEXT, local_results, make_report

pytestmark = pytest.mark.usefixtures("no_broker")


def reports_path(version) -> str:
    return f"/api/v1/models/{version.model.name}/versions/{version.number}/explanations/"


def test_post_answers_202_with_the_queued_report(api, engineer, version):
    response = api(engineer).post(
        reports_path(version),
        {"method": "lime", "texts": ["很好", "很差"], "params": {"num_samples": 100}},
        format="json",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["progress"] == 0 and body["method"] == "lime"
    assert body["params"]["num_samples"] == 100 and body["params"]["unit"] == "word"
    assert body["url"] == f"/api/v1/explanations/{body['id']}/" and body["requested_by"] == "erin"
    assert body["chunks"] == {"total": 1, "done": 0} and body["results"] is None and body["fidelity"] is None


def test_post_with_a_dataset_id(api, engineer, version):
    from tests.explanations.reporting import uploaded_dataset

    dataset = uploaded_dataset(uploader=engineer, rows=[("很好", "positive"), ("很差", "negative")])
    response = api(engineer).post(
        reports_path(version), {"method": "pfi", "dataset": dataset.pk, "params": {"top_k": 3}}, format="json"
    )
    assert response.status_code == 202, response.json()
    assert response.json()["dataset"] == dataset.pk and response.json()["text_count"] == 2


@pytest.mark.parametrize(
    "body, status, detail",
    [
        ({"method": "anchors", "texts": ["好"]}, 400, "Unknown method 'anchors'"),
        ({"method": "shap", "texts": []}, 400, "texts must be a non-empty list"),
        ({"method": "shap"}, 400, "either a dataset id or a list of texts"),
        ({"method": "shap", "dataset": 99999}, 400, "No dataset 99999"),
        ({"method": "shap", "texts": ["好"], "params": {"max_evals": 0}}, 400, "max_evals"),
        ({"method": "shap", "texts": ["好"], "params": "max_evals=5"}, 400, "params"),
    ],
)
def test_bad_requests_are_4xx_json_with_a_detail(api, engineer, version, body, status, detail):
    response = api(engineer).post(reports_path(version), body, format="json")
    assert response.status_code == status, response.json()
    assert detail in response.json()["detail"]
    assert not ExplanationReport.objects.exists()


def test_unknown_version_is_404(api, engineer, version):
    response = api(engineer).post(
        f"/api/v1/models/{version.model.name}/versions/99/explanations/",
        {"method": "shap", "texts": ["好"]},
        format="json",
    )
    assert response.status_code == 404


def test_get_lists_a_versions_reports_without_their_results(api, engineer, manager, version):
    make_report(version=version, requested_by=engineer)
    make_report(version=version, requested_by=engineer, method="lime", status="running")
    response = api(manager).get(reports_path(version))
    assert response.status_code == 200
    assert [(r["method"], r["status"]) for r in response.json()["results"]] == [
        ("lime", "running"),
        ("shap", "succeeded"),
    ]
    assert "results" not in response.json()["results"][0]


def test_detail_has_status_progress_params_timings_results_and_fidelity(api, engineer, reviewer, version):
    report = make_report(version=version, requested_by=engineer)
    body = api(reviewer).get(f"/api/v1/explanations/{report.pk}/").json()
    assert body["status"] == "succeeded" and body["progress"] == 100
    assert body["params"] == {"seed": 0} and body["timings"] == {"wall_seconds": 1.5}
    assert body["results"]["texts"][1]["text"] == SCRIPT_TEXT
    assert body["fidelity"]["comprehensiveness"]["aopc"] == 0.3


@pytest.mark.parametrize("path", ["/", "/export.json", "/export.csv"])
def test_outsiders_read_nothing(api, engineer, outsider, version, path):
    report = make_report(version=version, requested_by=engineer)
    response = api(outsider).get(f"/api/v1/explanations/{report.pk}{path}")
    assert response.status_code == 403 and "detail" in response.json()
    assert api(outsider).get(reports_path(version)).status_code == 403


def test_anonymous_callers_are_refused(api, engineer, version):
    report = make_report(version=version, requested_by=engineer)
    assert api(None).get(f"/api/v1/explanations/{report.pk}/").status_code in (401, 403)
    assert api(None).post(reports_path(version), {"method": "shap", "texts": ["好"]}, format="json").status_code in (
        401,
        403,
    )


def test_managers_read_but_may_not_request(api, engineer, manager, version):
    report = make_report(version=version, requested_by=engineer)
    assert api(manager).get(f"/api/v1/explanations/{report.pk}/").status_code == 200
    response = api(manager).post(reports_path(version), {"method": "shap", "texts": ["好"]}, format="json")
    assert response.status_code == 403 and "engineers and reviewers" in response.json()["detail"]


def test_unknown_report_is_404(api, engineer):
    assert api(engineer).get("/api/v1/explanations/424242/").status_code == 404


def test_the_requester_cancels_a_running_report(api, engineer, version):
    report = make_report(version=version, requested_by=engineer, status="running")
    response = api(engineer).post(f"/api/v1/explanations/{report.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None


def test_only_the_requester_may_cancel(api, engineer, engineer2, reviewer, manager, version):
    report = make_report(version=version, requested_by=engineer, status="queued")
    for user in (engineer2, reviewer, manager):
        response = api(user).post(f"/api/v1/explanations/{report.pk}/cancel/")
        assert response.status_code == 403, user
    assert ExplanationReport.objects.get(pk=report.pk).status == "queued"


def test_a_finished_report_cannot_be_cancelled(api, engineer, version):
    report = make_report(version=version, requested_by=engineer)
    response = api(engineer).post(f"/api/v1/explanations/{report.pk}/cancel/")
    assert response.status_code == 409 and response.json()["current_status"] == "succeeded"


def test_json_export_is_the_whole_report(api, engineer, version):
    report = make_report(version=version, requested_by=engineer)
    response = api(engineer).get(f"/api/v1/explanations/{report.pk}/export.json")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    assert f"report-{report.pk}.json" in response["Content-Disposition"]
    document = json.loads(response.content)
    assert document["report"]["method"] == "shap" and document["report"]["model"] == version.model.name
    assert (
        document["results"]["texts"][1]["text"] == SCRIPT_TEXT and document["fidelity"]["additivity_max_error"] == 2e-9
    )


def test_csv_export_has_a_row_per_token_per_text(api, engineer, version):
    report = make_report(version=version, requested_by=engineer, texts=["很好", "=1+2"])
    response = api(engineer).get(f"/api/v1/explanations/{report.pk}/export.csv", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["text_index", "token_index", "token"] and rows[0][-2:] == [
        "value:negative",
        "value:positive",
    ]
    assert len(rows) == 1 + 2 + 4
    assert rows[1][:3] == ["0", "0", "很"] and rows[1][5] == "positive"
    assert rows[3][2] == "'="  # a spreadsheet formula is defused


def test_exports_carry_the_standard_error_of_every_value(api, engineer, version):
    results = local_results(["很好", "差"], std_errors=True)
    report = make_report(version=version, requested_by=engineer, texts=["很好", "差"], results=results)
    document = json.loads(api(engineer).get(f"/api/v1/explanations/{report.pk}/export.json").content)
    first = document["results"]["texts"][0]
    assert first["std_errors"]["positive"] == [0.025, 0.06] and first["evaluations"] == 120
    rows = list(
        csv.reader(io.StringIO(api(engineer).get(f"/api/v1/explanations/{report.pk}/export.csv").content.decode()))
    )
    assert rows[0][-5:] == [
        "value:negative",
        "value:positive",
        "std_error:negative",
        "std_error:positive",
        "evaluations",
    ]
    assert rows[1][-3:] == ["0.025", "0.025", "120"] and rows[2][-3:] == ["0.06", "0.06", "120"]
    assert len(rows) == 1 + 2 + 1


def test_csv_export_of_pfi_has_a_row_per_feature(api, engineer, version):
    report = make_report(version=version, requested_by=engineer, method="pfi")
    rows = list(
        csv.reader(
            io.StringIO(api(engineer).get(f"/api/v1/explanations/{report.pk}/export.csv").content.decode("utf-8-sig"))
        )
    )
    assert rows[0] == [
        "token",
        "accuracy_drop_mean",
        "accuracy_drop_std",
        "accuracy_drop_positive_repeats",
        "macro_f1_drop_mean",
        "macro_f1_drop_std",
        "texts_affected",
    ]
    # A report from before the count of repeats with a drop leaves that cell empty.
    assert rows[1] == ["好", "0.2", "0.01", "", "0.21", "0.02", "12"] and rows[2][0] == "'=cmd"


def test_an_unfinished_report_cannot_be_exported(api, engineer, version):
    report = make_report(version=version, requested_by=engineer, status="running")
    response = api(engineer).get(f"/api/v1/explanations/{report.pk}/export.csv")
    assert response.status_code == 409 and "only a succeeded report" in response.json()["detail"]


def test_the_schema_documents_the_explanation_endpoints(api, engineer):
    schema = api(engineer).get("/api/schema/?format=json").json()
    assert "/api/v1/models/{name}/versions/{number}/explanations/" in schema["paths"]
    assert {
        "/api/v1/explanations/{id}/",
        "/api/v1/explanations/{id}/cancel/",
        "/api/v1/explanations/{id}/export.csv",
    } <= set(schema["paths"])
