"""Requesting a report: who may, and every bad input refused before anything
is written (or, for an unloadable artifact, a failed report saying why)."""

import pytest

from explanations import services
from explanations.models import ExplanationChunk, ExplanationReport
from glassbox.errors import InvalidInput, NotPermitted
from governance.models import AuditEvent
from tests.conftest import ModelVersionFactory, RegisteredModelFactory


def request(actor, version, **kwargs):
    kwargs.setdefault("method", "shap")
    if "dataset" not in kwargs:
        kwargs.setdefault("texts", ["这个手机很好用", "质量太差了"])
    kwargs.setdefault("params", {"max_evals": 50, "chunk_size": 1})
    return services.report_request(actor=actor, version=version, **kwargs)


def test_engineer_requests_a_report_that_is_queued_in_chunks(
    engineer, version, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(services, "_enqueue", lambda task, report_id: sent.append((task, report_id)))

    with django_capture_on_commit_callbacks(execute=True):
        report = request(engineer, version)

    assert report.status == "queued" and report.progress == 0
    assert report.text_count == 2 and report.params["max_evals"] == 50 and report.params["seed"] == 0
    assert list(report.chunks.values_list("index", "spec")) == [
        (0, {"start": 0, "stop": 1}),
        (1, {"start": 1, "stop": 2}),
    ]
    assert sent == [("run_report", report.pk)]
    event = AuditEvent.objects.get(action="explanation.request")
    assert event.actor_username == "erin" and event.object_id == str(report.pk)
    assert event.model_name == version.model.name and event.version_number == version.number


def test_nothing_is_enqueued_before_the_request_commits(
    engineer, version, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(services, "_enqueue", lambda task, report_id: sent.append(task))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        request(engineer, version)
    assert sent == [] and len(callbacks) == 1


def test_reviewer_may_request_the_evidence_they_need(reviewer, version):
    assert request(reviewer, version).requested_by == reviewer


@pytest.mark.parametrize("persona", ["manager", "outsider"])
def test_managers_and_outsiders_may_not_request_reports(persona, request_fixture, version):
    user = request_fixture(persona)
    with pytest.raises(NotPermitted):
        request(user, version)
    assert not ExplanationReport.objects.exists()
    assert AuditEvent.objects.filter(action="explanation.request", outcome="denied").count() == 1


@pytest.fixture
def request_fixture(request):
    return request.getfixturevalue


def test_unknown_method_is_refused(engineer, version):
    with pytest.raises(InvalidInput, match="Unknown method 'integrated-gradients'; use one of shap, lime, pfi, ig"):
        request(engineer, version, method="integrated-gradients")
    assert not ExplanationReport.objects.exists()


@pytest.mark.parametrize("texts", [[], [""], ["好", "   "], "not a list", [3]])
def test_empty_or_malformed_texts_are_refused(engineer, version, texts):
    with pytest.raises(InvalidInput):
        request(engineer, version, texts=texts)
    assert not ExplanationReport.objects.exists() and not ExplanationChunk.objects.exists()


def test_a_dataset_or_texts_but_not_both(engineer, version):
    with pytest.raises(InvalidInput, match="either a dataset id or a list of texts"):
        request(engineer, version, texts=None)


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("shap", {"max_evals": 1}, "max_evals"),
        ("shap", {"max_evals": 10**9}, "max_evals"),
        ("lime", {"num_samples": 5}, "num_samples"),
        ("lime", {"num_samples": "many"}, "num_samples"),
        ("shap", {"budget_of_doom": 3}, "budget_of_doom"),
        ("shap", {"shap_results": {}}, "shap_results"),
    ],
)
def test_parameters_out_of_range_are_refused(engineer, version, method, params, message):
    with pytest.raises(InvalidInput, match=message):
        request(engineer, version, method=method, params=params)
    assert not ExplanationReport.objects.exists()


def test_pfi_repeats_out_of_range_are_refused(engineer, version):
    from tests.explanations.reporting import uploaded_dataset

    dataset = uploaded_dataset(uploader=engineer, rows=[("很好", "positive"), ("很差", "negative")])
    with pytest.raises(InvalidInput, match="repeats"):
        request(engineer, version, method="pfi", dataset=dataset, params={"repeats": 0})


def test_pfi_needs_a_dataset_with_true_labels(engineer, version):
    with pytest.raises(InvalidInput, match="pfi needs a dataset"):
        request(engineer, version, method="pfi", params={})


def test_a_dataset_with_labels_the_model_does_not_know_is_refused_naming_them(engineer, version):
    from tests.explanations.reporting import uploaded_dataset

    dataset = uploaded_dataset(
        uploader=engineer, rows=[("很好", "positive"), ("一般", "neutral"), ("很差", "angry")], name="three-way"
    )
    with pytest.raises(InvalidInput, match="labels the model does not know: angry, neutral") as refused:
        request(engineer, version, dataset=dataset)
    assert refused.value.extra["unknown_labels"] == ["angry", "neutral"]


def test_a_version_whose_artifact_is_missing_gets_a_failed_report_with_the_reason(
    engineer, django_capture_on_commit_callbacks, monkeypatch
):
    version = ModelVersionFactory(model=RegisteredModelFactory(created_by=engineer))  # no blob stored
    sent = []
    monkeypatch.setattr(services, "_enqueue", lambda task, report_id: sent.append(task))

    with django_capture_on_commit_callbacks(execute=True):
        report = request(engineer, version)

    report.refresh_from_db()
    assert report.status == "failed" and report.finished_at is not None
    assert "missing from the artifact store" in report.error
    assert sent == []  # never stuck waiting for a worker
    assert list(
        AuditEvent.objects.filter(object_type="explanations.explanationreport")
        .order_by("id")
        .values_list("action", flat=True)
    ) == [
        "explanation.request",
        "explanation.fail",
    ]


def test_a_broken_artifact_fails_the_report_in_the_worker_with_the_reason(engineer, version):
    from explanations.tasks import run_report

    report = request(engineer, version)
    run_report(report.pk)

    report.refresh_from_db()
    assert report.status == "failed"
    assert report.error.startswith("The model could not be loaded:")
    assert not report.chunks.exclude(status="pending").exists()


def test_validating_a_request_imports_no_heavy_library():
    """The web process checks methods and parameters without shap, lime or torch."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    code = (
        "import django, sys; django.setup();"
        "from explanations import selectors;"
        "[selectors.explainer_for(m).validate_params({}) for m in selectors.known_methods()];"
        "heavy = sorted({'torch', 'shap', 'lime', 'transformers', 'sklearn'} & set(sys.modules));"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "glassbox.settings"}
    done = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
