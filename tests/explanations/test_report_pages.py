"""The report pages: the form and list on the version page, the report page
(heat map, SVG charts, fidelity, progress), cancel, and the comparison of two
versions. All user text is escaped."""

import pytest

from explanations.models import ExplanationReport
from tests.conftest import ModelVersionFactory, page_client_for
from tests.explanations.reporting import SCRIPT_TEXT, local_results, make_report

pytestmark = pytest.mark.usefixtures("no_broker")


def test_version_page_lists_reports_and_offers_the_form_to_engineers(engineer, version):
    report = make_report(version=version, requested_by=engineer, status="running")
    page = page_client_for(engineer).get(version.get_absolute_url()).content.decode()
    assert "Explanation reports" in page and f'href="/explanations/{report.pk}/"' in page
    assert f'action="/models/{version.model.name}/versions/{version.number}/explanations/new/"' in page
    assert 'name="csrfmiddlewaretoken"' in page and "<progress" in page


def test_managers_see_reports_but_no_form(engineer, manager, version):
    make_report(version=version, requested_by=engineer)
    page = page_client_for(manager).get(version.get_absolute_url()).content.decode()
    assert "Explanation reports" in page and "/explanations/new/" not in page


def test_the_form_requests_a_report_and_shows_it(engineer, version):
    response = page_client_for(engineer).post(
        f"/models/{version.model.name}/versions/{version.number}/explanations/new/",
        {"method": "shap", "texts": "这个很好\n\n那个很差\n", "params": '{"max_evals": 40}'},
    )
    report = ExplanationReport.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/explanations/{report.pk}/"
    assert report.texts == ["这个很好", "那个很差"] and report.params["max_evals"] == 40
    page = page_client_for(engineer).get(response["Location"]).content.decode()
    assert 'id="report-progress"' in page and f"/api/v1/explanations/{report.pk}/" in page  # polls the API


@pytest.mark.parametrize(
    "data, message",
    [
        ({"method": "shap", "texts": "", "params": ""}, "Choose a dataset or type at least one text."),
        ({"method": "shap", "texts": "好", "params": "{oops"}, "Not valid JSON"),
        ({"method": "shap", "texts": "好", "params": '{"max_evals": 3}'}, "max_evals"),
        ({"method": "pfi", "texts": "好", "params": ""}, "pfi needs a dataset"),
    ],
)
def test_the_form_shows_what_is_wrong(engineer, version, data, message):
    response = page_client_for(engineer).post(
        f"/models/{version.model.name}/versions/{version.number}/explanations/new/", data
    )
    assert response.status_code == 400 and message in response.content.decode()
    assert not ExplanationReport.objects.exists()


def test_the_form_is_csrf_protected(engineer, version):
    client = page_client_for(engineer, enforce_csrf=True)
    response = client.post(
        f"/models/{version.model.name}/versions/{version.number}/explanations/new/", {"method": "shap", "texts": "好"}
    )
    assert response.status_code == 403 and not ExplanationReport.objects.exists()


def test_managers_and_outsiders_cannot_open_the_form(manager, outsider, version):
    path = f"/models/{version.model.name}/versions/{version.number}/explanations/new/"
    assert page_client_for(manager).get(path).status_code == 403
    assert page_client_for(outsider).get(path).status_code == 403


def test_report_page_shows_heat_map_charts_fidelity_params_and_requester(engineer, reviewer, version):
    report = make_report(version=version, requested_by=engineer)
    page = page_client_for(reviewer).get(report.get_absolute_url()).content.decode()
    assert 'class="token" style="background-color: rgba(' in page
    assert 'title="好: ' in page and "toward positive" in page
    assert "predicted <strong>positive</strong> (p = 0.800)" in page
    assert page.count("<svg") == 2 and "<rect" in page  # one bar chart per class
    assert "Comprehensiveness" in page and "0.3000" in page and "0.0300" in page  # report vs random
    assert "Requested by</dt><dd>erin" in page and "seed" in page and "wall_seconds" in page
    assert (
        "Export CSV" in page and "<script>" not in page.split("<main>")[1].split("</main>")[0]
    )  # finished: no polling


def test_heat_map_escapes_a_script_text(engineer, version):
    report = make_report(version=version, requested_by=engineer, texts=[SCRIPT_TEXT, "好<b>x</b>"])
    page = page_client_for(engineer).get(report.get_absolute_url()).content.decode()
    assert "<script>alert" not in page and "<b>" not in page
    # Each character is its own token: the angle brackets arrive escaped, in spans and titles.
    assert 'title="&lt;: ' in page and ">&lt;</span>" in page and ">&gt;</span>" in page


def test_heat_map_marks_uncertain_tokens_and_says_how_many_signs_are_certain(engineer, reviewer, version):
    texts = ["很好", "差"]
    report = make_report(
        version=version, requested_by=engineer, texts=texts, results=local_results(texts, std_errors=True)
    )
    page = page_client_for(reviewer).get(report.get_absolute_url()).content.decode()
    assert "Faded, dotted-underlined" in page and "value ± 1.96 standard errors" in page  # the legend
    assert "sign certain at 95 % for 50 % of tokens" in page and "sign certain at 95 % for 100 % of tokens" in page
    assert page.count('class="token uncertain"') == 1  # 好 (value 0 ± 0.118)
    assert page.count('class="token-sample uncertain"') == 1  # the legend's sample
    assert 'title="很: -0.10000 toward positive ± 0.04900 (95 %)"' in page
    assert "120 evaluations" in page


def test_a_report_stored_before_standard_errors_still_renders_without_them(engineer, reviewer, version):
    report = make_report(version=version, requested_by=engineer, texts=["很好"])  # no std_errors in its results
    response = page_client_for(reviewer).get(report.get_absolute_url())
    page = response.content.decode()
    assert response.status_code == 200 and 'class="token" style="background-color: rgba(' in page
    assert "sign certain" not in page and "uncertain" not in page and "Faded" not in page


def test_report_page_of_pfi_shows_drops_with_their_spread(engineer, version):
    report = make_report(version=version, requested_by=engineer, method="pfi")
    page = page_client_for(engineer).get(report.get_absolute_url()).content.decode()
    assert "Baseline accuracy 0.9000" in page and "0.2000 ± 0.0100" in page and "=cmd" in page


def test_a_failed_report_says_why(engineer, version):
    report = make_report(version=version, requested_by=engineer, status="failed")
    ExplanationReport.objects.filter(pk=report.pk).update(error="The model could not be loaded: <boom>")
    page = page_client_for(engineer).get(report.get_absolute_url()).content.decode()
    assert "The model could not be loaded: &lt;boom&gt;" in page


def test_cancel_from_the_report_page(engineer, version):
    report = make_report(version=version, requested_by=engineer, status="queued")
    page = page_client_for(engineer).get(report.get_absolute_url()).content.decode()
    assert "Cancel report" in page
    response = page_client_for(engineer).post(f"/explanations/{report.pk}/cancel/")
    assert response.status_code == 302
    assert ExplanationReport.objects.get(pk=report.pk).status == "cancelled"


def test_others_cannot_cancel_from_the_page(engineer, reviewer, version):
    report = make_report(version=version, requested_by=engineer, status="queued")
    assert "Cancel report" not in page_client_for(reviewer).get(report.get_absolute_url()).content.decode()
    assert page_client_for(reviewer).post(f"/explanations/{report.pk}/cancel/").status_code == 403
    assert ExplanationReport.objects.get(pk=report.pk).status == "queued"


def test_outsiders_cannot_open_a_report(engineer, outsider, version):
    report = make_report(version=version, requested_by=engineer)
    assert page_client_for(outsider).get(report.get_absolute_url()).status_code == 403


def test_comparison_says_what_is_missing(engineer, version):
    ModelVersionFactory(model=version.model, labels=version.labels)
    page = page_client_for(engineer).get(f"/models/{version.model.name}/explanations/compare/").content.decode()
    assert "Each version needs a succeeded shap report" in page


def test_ig_reports_show_completeness_and_compare_across_versions(engineer, version):
    new_version = ModelVersionFactory(model=version.model, labels=version.labels)
    results = local_results(["这个很好"])
    results["texts"][0]["completeness_error"] = 3.2e-7
    fidelity = {"comprehensiveness": {"aopc": 0.2}, "completeness_max_error": 3.2e-7}
    make_report(version=version, requested_by=engineer, method="ig", results=results, fidelity=fidelity)
    report = make_report(version=new_version, requested_by=engineer, method="ig", results=results, fidelity=fidelity)

    page = page_client_for(engineer).get(report.get_absolute_url()).content.decode()
    assert "integrated gradients report" in page and "IG completeness" in page and "3.20e-07" in page
    assert "completeness error 3.2e-07" in page and page.count('class="token"') == 4
    page = (
        page_client_for(engineer).get(f"/models/{version.model.name}/explanations/compare/?a=1&b=2&method=ig").content
    )
    assert b'<option value="ig" selected>' in page and b"Each version needs" not in page
