"""Saying how long a report will take: the estimate in the 202 and before
submitting, the size cap (code report_too_large) and sampling instead."""

from collections import Counter
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from explanations import selectors, services
from explanations.models import ExplanationReport
from explanations.sampling import stratified_sample
from tests.explanations.reporting import make_report, stored_version, uploaded_dataset


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    monkeypatch.setattr(services, "_enqueue", lambda task, report_id: None)


@pytest.fixture
def version(engineer):
    return stored_version(uploader=engineer)  # a sklearn version


@pytest.fixture
def dataset(engineer):
    # 7 negative, 3 positive.
    rows = [(f"差评第{i}条", "negative") for i in range(7)] + [(f"好评第{i}条", "positive") for i in range(3)]
    return uploaded_dataset(uploader=engineer, rows=rows, name="ten-rows")


def reports_url(version) -> str:
    return f"/api/v1/models/{version.model.name}/versions/{version.number}/explanations/"


def test_the_202_answer_carries_the_estimate(api, engineer, version):
    response = api(engineer).post(
        reports_url(version),
        {"method": "shap", "texts": ["这个很好", "那个很差"], "params": {"max_evals": 100}},
        format="json",
    )
    assert response.status_code == 202, response.json()
    estimate = response.json()["estimate"]
    # Nothing measured yet: the assumed rate for a sklearn model, said in the basis.
    assert estimate["rows_per_second"] == selectors.ASSUMED_ROWS_PER_SECOND["sklearn"]
    assert "no report of this version has run yet" in estimate["basis"]
    # 100 evaluations + 21 ERASER rows per text.
    assert estimate["model_rows"] == 2 * (100 + 21)
    assert estimate["seconds"] == round(2 * 121 / selectors.ASSUMED_ROWS_PER_SECOND["sklearn"])
    assert ExplanationReport.objects.get().estimate == estimate


def test_the_estimate_uses_the_speed_measured_on_the_versions_reports(api, engineer, version):
    done = make_report(version=version, requested_by=engineer, chunks=2)
    started = timezone.now() - timedelta(seconds=30)
    for chunk, rows in zip(done.chunks.order_by("index"), (1000, 2000)):
        chunk.started_at, chunk.finished_at, chunk.result = (
            started,
            started + timedelta(seconds=10),
            {"model_rows": rows},
        )
        chunk.save()

    response = api(engineer).post(
        reports_url(version), {"method": "lime", "texts": ["好"], "params": {"num_samples": 299}}, format="json"
    )

    estimate = response.json()["estimate"]
    assert estimate["rows_per_second"] == 150.0  # 3,000 rows in 20 chunk-seconds
    assert estimate["basis"].startswith("measured on this version: 3,000 model rows in its last 2 finished")
    assert estimate["model_rows"] == 299 + 1 + 21 and estimate["seconds"] == round(321 / 150)


def test_the_cost_per_text_follows_each_methods_parameters(version):
    ig = selectors.explainer_for("ig")
    params = ig.validate_params({"n_steps": 50})
    # Forward and backward (≈ 3 forward rows) at every path point, f(x) and f(baseline), then ERASER.
    assert ig.estimated_rows(10, params, 2) == 10 * (3 * 50 + 2 + 21)
    assert ig.estimated_rows(10, ig.validate_params({"n_steps": 50, "target": "all"}), 3) == 10 * (3 * 150 + 2 + 21)
    pfi = selectors.explainer_for("pfi")
    assert pfi.estimated_rows(1000, pfi.validate_params({"top_k": 20, "repeats": 50}), 2) == 1000 * 21 + 100 * 22


def test_the_estimate_api_says_how_long_without_queuing_anything(api, engineer, version, dataset):
    response = api(engineer).post(
        reports_url(version) + "estimate/", {"method": "shap", "dataset": dataset.pk}, format="json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["text_count"] == 10 and body["max_texts"] == 5000
    assert body["estimate"]["model_rows"] == 10 * (500 + 21) and body["estimate"]["seconds"] > 0
    assert not ExplanationReport.objects.exists()


def test_a_request_above_the_cap_answers_400_report_too_large_with_the_estimate_and_how_to_sample(
    api, engineer, version, dataset, settings
):
    settings.GLASSBOX_MAX_REPORT_TEXTS = 8
    response = api(engineer).post(reports_url(version), {"method": "shap", "dataset": dataset.pk}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "report_too_large" and body["field"] == "dataset" and body["max_texts"] == 8
    assert body["estimate"]["texts"] == 10 and body["estimate"]["seconds"] >= 0 and body["estimate"]["basis"]
    assert body["sample"] == {"n": 8, "seed": 0}
    assert '"sample": {"n": 8, "seed": 0}' in body["detail"] and "stratified by label" in body["detail"]
    assert not ExplanationReport.objects.exists()


def test_a_sample_draws_n_texts_stratified_by_label_and_records_it(api, engineer, version, dataset, settings):
    settings.GLASSBOX_MAX_REPORT_TEXTS = 8
    response = api(engineer).post(
        reports_url(version),
        {"method": "shap", "dataset": dataset.pk, "sample": {"n": 5, "seed": 3}, "params": {"chunk_size": 2}},
        format="json",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["text_count"] == 5 and body["params"]["sample"] == {"n": 5, "seed": 3}
    assert body["chunks"]["total"] == 3 and body["estimate"]["texts"] == 5

    report = ExplanationReport.objects.get()
    texts, labels = selectors.report_inputs(report)
    assert len(texts) == 5 and Counter(labels) == {"negative": 4, "positive": 1}  # 7:3 of 5 → 3.5:1.5 → 4:1
    assert all(("差评" in t) == (label == "negative") for t, label in zip(texts, labels))
    assert selectors.report_inputs(report) == (texts, labels)  # the worker draws the same rows every time
    assert "sample" not in selectors.run_params(report)  # which texts, not a parameter of the method


@pytest.mark.parametrize(
    "sample, field",
    [
        ({"n": 0}, "sample.n"),
        ({"n": 11}, "sample.n"),  # more than the dataset's rows
        ({"n": 5001}, "sample.n"),  # more than the cap
        ({"n": 3, "seed": -1}, "sample.seed"),
        ({"n": "3"}, "sample.n"),
        ({"seed": 3}, "sample"),
        ({"n": 3, "stratify": "no"}, "sample"),
        ([3], "sample"),
    ],
)
def test_a_bad_sample_is_refused_naming_the_field(api, engineer, version, dataset, sample, field):
    response = api(engineer).post(
        reports_url(version), {"method": "shap", "dataset": dataset.pk, "sample": sample}, format="json"
    )
    assert response.status_code == 400 and response.json()["field"] == field, response.json()
    assert not ExplanationReport.objects.exists()


def test_inline_texts_cannot_be_sampled(api, engineer, version):
    response = api(engineer).post(
        reports_url(version), {"method": "shap", "texts": ["好", "差"], "sample": {"n": 1}}, format="json"
    )
    assert response.status_code == 400 and response.json()["field"] == "sample"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"method": "gradcam", "texts": ["好"]}, "method"),
        ({"method": "shap", "texts": ["好"], "params": {"max_evals": 3}}, "params.max_evals"),
        ({"method": "lime", "texts": ["好"], "params": {"samples": 3}}, "params.samples"),
        ({"method": "shap", "texts": ["好"], "params": {"shap_results": {}}}, "params.shap_results"),
    ],
)
def test_bad_methods_and_parameters_answer_400_naming_the_field(api, engineer, version, body, field):
    response = api(engineer).post(reports_url(version), body, format="json")
    assert response.status_code == 400 and response.json()["field"] == field, response.json()


def test_stratified_sampling_keeps_each_labels_share_and_depends_only_on_the_seed():
    labels = ["a"] * 70 + ["b"] * 25 + ["c"] * 5
    first = stratified_sample(labels, 20, seed=1)
    assert first == sorted(set(first)) and len(first) == 20
    assert Counter(labels[i] for i in first) == {"a": 14, "b": 5, "c": 1}
    assert stratified_sample(list(labels), 20, seed=1) == first
    assert stratified_sample(labels, 20, seed=2) != first
    assert stratified_sample(labels, 500, seed=1) == list(range(100))


def test_time_remaining_comes_from_the_pace_once_running_and_from_the_estimate_before(engineer, version):
    now = timezone.now()
    report = make_report(version=version, requested_by=engineer, status="running")
    report.started_at, report.progress = now - timedelta(seconds=30), 25
    assert report.remaining_seconds(now) == 90
    report.progress, report.estimate = 0, {"seconds": 100}
    assert report.remaining_seconds(now) == 70
    report.status = "queued"
    report.started_at = None
    assert report.remaining_seconds(now) == 100
    report.status = "succeeded"
    assert report.remaining_seconds(now) is None


def test_the_form_shows_the_estimate_before_submitting(engineer, version, dataset):
    client = Client()
    client.force_login(engineer)
    url = f"/models/{version.model.name}/versions/{version.number}/explanations/new/"
    response = client.post(url, {"method": "shap", "dataset": dataset.pk, "action": "estimate"})
    page = response.content.decode()
    assert response.status_code == 200 and 'id="report-estimate"' in page
    assert "Estimated time: about" in page and "for 10 texts" in page and "assumed" in page
    assert not ExplanationReport.objects.exists()


def test_the_form_samples_and_explains_a_refusal_with_its_estimate(engineer, version, dataset, settings):
    settings.GLASSBOX_MAX_REPORT_TEXTS = 8
    client = Client()
    client.force_login(engineer)
    url = f"/models/{version.model.name}/versions/{version.number}/explanations/new/"
    refused = client.post(url, {"method": "shap", "dataset": dataset.pk})
    assert refused.status_code == 400 and "more than the 8 a report may explain" in refused.content.decode()
    assert "Estimated time: about" in refused.content.decode()

    response = client.post(url, {"method": "shap", "dataset": dataset.pk, "sample_n": 6, "sample_seed": 1})
    report = ExplanationReport.objects.get()
    assert response.status_code == 302 and report.text_count == 6 and report.params["sample"] == {"n": 6, "seed": 1}


def test_a_running_reports_page_shows_the_time_left(engineer, version):
    report = make_report(version=version, requested_by=engineer, status="running")
    ExplanationReport.objects.filter(pk=report.pk).update(
        progress=50, started_at=timezone.now() - timedelta(seconds=60), estimate={"seconds": 100, "basis": "b"}
    )
    client = Client()
    client.force_login(engineer)
    page = client.get(report.get_absolute_url()).content.decode()
    assert 'id="report-remaining">about 60 s left' in page and "remaining_seconds" in page
