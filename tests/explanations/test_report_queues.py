"""Reports of the methods named in GLASSBOX_GPU_METHODS go to the
`explanations-gpu` queue (GPU workers consume it); all others to `explanations`.
The messages land in this machine's Redis."""

import ast

import pytest

from explanations import services
from glassbox.celery import app
from tests.explanations.reporting import stored_version

QUEUES = ("explanations", "explanations-gpu")


@pytest.fixture
def broker():
    """Task names waiting in a queue, read (and removed) from the real broker."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in QUEUES:
            channel.queue_declare(queue, durable=True, auto_delete=False)
            channel.queue_purge(queue)

        def waiting(queue: str) -> list[tuple[str, list]]:
            found = []
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                found.append((message.headers["task"], list(ast.literal_eval(message.headers["argsrepr"]))))
            return found

        yield waiting
        for queue in QUEUES:
            channel.queue_purge(queue)


def test_gpu_methods_go_to_the_gpu_queue_and_others_stay(
    engineer, settings, broker, django_capture_on_commit_callbacks
):
    settings.GLASSBOX_GPU_METHODS = ["shap"]
    version = stored_version(uploader=engineer)
    with django_capture_on_commit_callbacks(execute=True):
        shap = services.report_request(actor=engineer, version=version, method="shap", texts=["很好"], params={})
        lime = services.report_request(actor=engineer, version=version, method="lime", texts=["很好"], params={})

    assert broker("explanations-gpu") == [("explanations.tasks.run_report", [shap.pk])]
    assert broker("explanations") == [("explanations.tasks.run_report", [lime.pk])]

    chunk_ids = list(shap.chunks.values_list("pk", flat=True))
    services._enqueue_chunks(chunk_ids)
    assert broker("explanations-gpu") == [("explanations.tasks.run_chunk", [pk]) for pk in chunk_ids]


def test_without_gpu_methods_every_report_stays_on_explanations(
    engineer, settings, broker, django_capture_on_commit_callbacks
):
    settings.GLASSBOX_GPU_METHODS = []
    version = stored_version(uploader=engineer)
    with django_capture_on_commit_callbacks(execute=True):
        report = services.report_request(actor=engineer, version=version, method="shap", texts=["很好"], params={})
    assert broker("explanations") == [("explanations.tasks.run_report", [report.pk])]
    assert broker("explanations-gpu") == []
