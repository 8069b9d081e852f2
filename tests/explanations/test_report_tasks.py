"""The report pipeline run in this process, step by step: start, chunks,
finalisation, progress, cancel, and the reaper that finishes what a dead
worker left. (test_report_worker.py runs the same through real workers.)"""

from datetime import timedelta

import pytest
from django.utils import timezone

from explanations import selectors, services, tasks
from explanations.models import ExplanationChunk, ExplanationReport
from governance.models import AuditEvent
from tests.explanations.reporting import stored_version


class FakeExplainer:
    """One 'value' per text: its length. Calls progress like the real ones."""

    method = "shap"
    is_global = False

    def __init__(self):
        self.cancel_after_progress = None

    def run_chunk(self, predictor, texts, labels, chunk, params, progress=None):
        for position in range(chunk["stop"] - chunk["start"]):
            if progress:
                progress((position + 1) / (chunk["stop"] - chunk["start"]))
        return {"texts": [{"index": i, "length": len(texts[i])} for i in range(chunk["start"], chunk["stop"])]}

    def combine(self, predictor, texts, labels, chunk_results, params):
        return {"texts": [entry for part in chunk_results for entry in part["texts"]], "nan": float("nan")}

    def fidelity(self, predictor, texts, labels, results, params):
        return {"comprehensiveness": {"aopc": 0.5}}


@pytest.fixture
def sent(monkeypatch):
    """What would have gone to the broker: (task, id) pairs."""
    messages = []
    monkeypatch.setattr(services, "_enqueue", lambda task, report_id: messages.append((task, report_id)))
    monkeypatch.setattr(services, "_enqueue_chunks", lambda ids: messages.extend(("run_chunk", i) for i in ids))
    return messages


@pytest.fixture
def fake(monkeypatch):
    explainer = FakeExplainer()
    monkeypatch.setattr(selectors, "explainer_for", lambda method: explainer)
    monkeypatch.setattr(selectors, "report_predictor", lambda report: object())
    return explainer


@pytest.fixture
def report(engineer, sent, django_capture_on_commit_callbacks):
    version = stored_version(uploader=engineer)
    with django_capture_on_commit_callbacks(execute=True):
        report = services.report_request(
            actor=engineer, version=version, method="shap", texts=["一", "二二", "三三三"], params={"chunk_size": 1}
        )
    sent.clear()
    return report


def run(task, *args, capture):
    with capture(execute=True):
        return task(*args)


def test_a_report_runs_from_queued_to_succeeded(report, fake, sent, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    assert run(tasks.run_report, report.pk, capture=capture) == {"started": True, "sent": 3}
    chunk_ids = list(report.chunks.order_by("index").values_list("pk", flat=True))
    assert sent == [("run_chunk", pk) for pk in chunk_ids]
    report.refresh_from_db()
    assert report.status == "running" and report.started_at and "queued_seconds" in report.timings

    sent.clear()
    run(tasks.run_chunk, chunk_ids[2], capture=capture)
    run(tasks.run_chunk, chunk_ids[0], capture=capture)
    report.refresh_from_db()
    assert report.progress == 60  # two of three chunks of the 90 % the chunks own
    assert sent == []
    assert run(tasks.run_chunk, chunk_ids[1], capture=capture)["last"] is True
    assert sent == [("finalize_report", report.pk)]

    assert run(tasks.finalize_report, report.pk, capture=capture) == {"finalized": True}
    report.refresh_from_db()
    assert report.status == "succeeded" and report.progress == 100
    assert report.results["texts"] == [{"index": 0, "length": 1}, {"index": 1, "length": 2}, {"index": 2, "length": 3}]
    assert report.results["nan"] is None  # stored as JSON null, not a NaN PostgreSQL refuses
    assert report.fidelity == {"comprehensiveness": {"aopc": 0.5}}
    assert report.timings["chunks"] == 3 and "wall_seconds" in report.timings and "combine_seconds" in report.timings
    actions = list(
        AuditEvent.objects.filter(object_type="explanations.explanationreport")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["explanation.request", "explanation.start", "explanation.succeed"]


def test_every_task_is_idempotent(report, fake, sent, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    run(tasks.run_report, report.pk, capture=capture)
    assert run(tasks.run_report, report.pk, capture=capture) == {"started": False, "sent": 0}
    chunk = report.chunks.get(index=0)
    run(tasks.run_chunk, chunk.pk, capture=capture)
    assert run(tasks.run_chunk, chunk.pk, capture=capture) == {"ran": False}
    assert run(tasks.finalize_report, report.pk, capture=capture) == {"finalized": False}  # chunks left
    for other in report.chunks.exclude(pk=chunk.pk):
        run(tasks.run_chunk, other.pk, capture=capture)
    assert run(tasks.finalize_report, report.pk, capture=capture) == {"finalized": True}
    assert run(tasks.finalize_report, report.pk, capture=capture) == {"finalized": False}
    chunk.refresh_from_db()
    assert chunk.attempts == 1


def test_chunks_of_a_cancelled_report_do_not_run(report, fake, sent, engineer, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    run(tasks.run_report, report.pk, capture=capture)
    services.report_cancel(actor=engineer, report=report)
    chunk = report.chunks.get(index=0)
    assert run(tasks.run_chunk, chunk.pk, capture=capture) == {"ran": False}
    report.refresh_from_db()
    assert report.status == "cancelled" and report.finished_at is not None


def test_a_running_chunk_stops_when_its_report_is_cancelled(
    report, fake, sent, engineer, django_capture_on_commit_callbacks, monkeypatch
):
    capture = django_capture_on_commit_callbacks
    run(tasks.run_report, report.pk, capture=capture)

    def cancelling_run_chunk(predictor, texts, labels, chunk, params, progress=None):
        services.report_cancel(actor=engineer, report=report)
        progress(0.5)
        raise AssertionError("progress() should have stopped the chunk")

    monkeypatch.setattr(fake, "run_chunk", cancelling_run_chunk)
    result = run(tasks.run_chunk, report.chunks.get(index=0).pk, capture=capture)
    assert result == {"ran": False, "stopped": "cancelled"}
    assert report.chunks.get(index=0).status == "running"  # never stored


def test_a_failing_chunk_fails_the_report_with_the_reason(
    report, fake, sent, django_capture_on_commit_callbacks, monkeypatch
):
    capture = django_capture_on_commit_callbacks
    run(tasks.run_report, report.pk, capture=capture)

    def broken(*args, **kwargs):
        raise ValueError("tokenizer exploded")

    monkeypatch.setattr(fake, "run_chunk", broken)
    chunk = report.chunks.get(index=1)
    # What a worker does when a task raises: on_failure with the exception.
    with pytest.raises(ValueError):
        tasks.run_chunk(chunk.pk)
    tasks.run_chunk.on_failure(ValueError("tokenizer exploded"), "task-id", (chunk.pk,), {}, None)
    report.refresh_from_db()
    assert report.status == "failed"
    assert report.error == "run_chunk failed: ValueError: tokenizer exploded"


def test_fidelity_trouble_is_reported_beside_the_results(
    report, fake, sent, django_capture_on_commit_callbacks, monkeypatch
):
    capture = django_capture_on_commit_callbacks
    run(tasks.run_report, report.pk, capture=capture)
    for chunk in report.chunks.all():
        run(tasks.run_chunk, chunk.pk, capture=capture)
    monkeypatch.setattr(fake, "fidelity", lambda *a, **k: 1 / 0)
    run(tasks.finalize_report, report.pk, capture=capture)
    report.refresh_from_db()
    assert report.status == "succeeded" and report.fidelity == {"error": "ZeroDivisionError: division by zero"}


def _age(chunk: ExplanationChunk, seconds: int) -> None:
    ExplanationChunk.objects.filter(pk=chunk.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=seconds))


def test_the_reaper_requeues_a_chunk_whose_worker_went_silent(
    report, fake, sent, settings, django_capture_on_commit_callbacks
):
    settings.GLASSBOX_EXPLANATION_STALE_SECONDS = 30
    capture = django_capture_on_commit_callbacks
    run(tasks.run_report, report.pk, capture=capture)
    sent.clear()
    silent = services.chunk_start(chunk_id=report.chunks.get(index=0).pk, worker="dead@host:1")
    alive = services.chunk_start(chunk_id=report.chunks.get(index=1).pk, worker="alive@host:2")
    _age(silent, 31)
    _age(alive, 5)

    with capture(execute=True):
        counts = services.reap_stale_work()

    assert counts["chunks_requeued"] == 1 and sent == [("run_chunk", silent.pk)]
    silent.refresh_from_db()
    assert silent.status == "pending" and silent.worker == "" and silent.attempts == 1
    event = AuditEvent.objects.get(action="explanation.requeue")
    assert event.detail["worker"] == "dead@host:1" and event.detail["chunk"] == 0
    # The requeued chunk then runs to the end like any other.
    for chunk in report.chunks.all():
        run(tasks.run_chunk, chunk.pk, capture=capture)
    run(tasks.finalize_report, report.pk, capture=capture)
    assert ExplanationReport.objects.get(pk=report.pk).status == "succeeded"


def test_a_chunk_lost_too_often_fails_its_report_with_the_reason(
    report, fake, sent, settings, django_capture_on_commit_callbacks
):
    settings.GLASSBOX_EXPLANATION_STALE_SECONDS = 30
    settings.GLASSBOX_EXPLANATION_MAX_ATTEMPTS = 2
    capture = django_capture_on_commit_callbacks
    run(tasks.run_report, report.pk, capture=capture)
    chunk_id = report.chunks.get(index=2).pk
    for _ in range(2):
        chunk = services.chunk_start(chunk_id=chunk_id, worker="doomed@host:9")
        _age(chunk, 60)
        with capture(execute=True):
            services.reap_stale_work()
    report.refresh_from_db()
    assert report.status == "failed"
    assert report.error.startswith("Chunk 2 was lost 2 times (last worker: doomed@host:9")


def test_the_reaper_finalises_a_report_whose_finaliser_died(
    report, fake, sent, settings, django_capture_on_commit_callbacks
):
    settings.GLASSBOX_EXPLANATION_STALE_SECONDS = 30
    capture = django_capture_on_commit_callbacks
    run(tasks.run_report, report.pk, capture=capture)
    for chunk in report.chunks.all():
        run(tasks.run_chunk, chunk.pk, capture=capture)
    services.report_finalize_start(report_id=report.pk)  # ... and the worker dies here
    ExplanationReport.objects.filter(pk=report.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=40))
    sent.clear()

    assert services.reap_stale_work()["finalize_requeued"] == 1
    assert sent == [("finalize_report", report.pk)]
    assert services.reap_stale_work()["finalize_requeued"] == 0  # one message per quiet period
    run(tasks.finalize_report, report.pk, capture=capture)
    assert ExplanationReport.objects.get(pk=report.pk).status == "succeeded"


def test_the_reaper_sends_chunks_that_were_never_sent(report, fake, sent, settings, django_capture_on_commit_callbacks):
    settings.GLASSBOX_EXPLANATION_STALE_SECONDS = 30
    services.report_start(report_id=report.pk)  # the worker dies before fanning out
    ExplanationReport.objects.filter(pk=report.pk).update(started_at=timezone.now() - timedelta(seconds=40))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.reap_stale_work()["chunks_requeued"] == 3
    assert sorted(pk for task, pk in sent if task == "run_chunk") == sorted(report.chunks.values_list("pk", flat=True))
