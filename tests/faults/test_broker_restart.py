"""Redis, the broker, restarted in the middle of an explanation report: a
private redis-server without persistence is killed while a chunk runs (every
queued message is gone with it) and started again on the same port a few
seconds later. The worker reconnects, finishes its chunk, and the reaper
sends the chunks whose messages were lost again: the report succeeds."""

import signal
import time

import pytest

from explanations.models import ExplanationChunk, ExplanationReport
from governance import roles
from governance.models import AuditEvent
from tests.conftest import UserFactory, api_client_for, wait_for
from tests.explanations.reporting import finished, running_chunk, uploaded_bert
from tests.faults import summary
from tests.faults.conftest import celery_broker

pytestmark = [pytest.mark.faults, pytest.mark.worker]

TEXTS = ["这个手机质量很好，物流也快！", "太差了，用了两天就坏了。", "一般般吧，价格还可以", "客服态度很差，再也不买了"]
# Fast heartbeats and a short "message lost" delay so that recovery takes seconds, not the production half hour.
FAST = {
    "GLASSBOX_EXPLANATION_HEARTBEAT_SECONDS": "1",
    "GLASSBOX_EXPLANATION_STALE_SECONDS": "6",
    "GLASSBOX_EXPLANATION_LOST_MESSAGE_SECONDS": "8",
    "GLASSBOX_REAPER_INTERVAL_SECONDS": "1",
}


def test_a_report_survives_a_redis_restart(worker_pool, private_redis, demo_models):
    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    client = api_client_for(engineer)
    with celery_broker(private_redis.url):
        version = uploaded_bert(uploader=engineer, demo_models=demo_models)
        worker_pool.start("steady", beat=True, env={**FAST, "CELERY_BROKER_URL": private_redis.url})
        response = client.post(
            f"/api/v1/models/{version.model.name}/versions/{version.number}/explanations/",
            {
                "method": "shap",
                "texts": [text * 3 for text in TEXTS * 2],
                "params": {"max_evals": 400, "chunk_size": 2},
            },
            format="json",
        )
        assert response.status_code == 202, response.json()
        report_id = response.json()["id"]
        running = running_chunk(report_id, log=worker_pool.log("steady"))
        pending_at_kill = ExplanationChunk.objects.filter(report_id=report_id, status="pending").count()

        private_redis.stop(signal.SIGKILL)  # no shutdown, no save: the queue and the unacked messages vanish
        killed_at = time.monotonic()
        time.sleep(4)
        assert ExplanationReport.objects.get(pk=report_id).status == "running"
        private_redis.start()

        state = wait_for(
            lambda: finished(report_id),
            timeout=240,
            what=f"report {report_id}\n{worker_pool.log('steady')[-4000:]}",
        )
        recovered_seconds = time.monotonic() - killed_at

    assert state["status"] == "succeeded", state["error"]
    assert state["chunks"] == {"total": 4, "done": 4}
    assert len(state["results"]["texts"]) == 8
    assert pending_at_kill >= 1  # the restart really lost queued work
    running.refresh_from_db()
    assert running.status == "done"
    requeued = AuditEvent.objects.filter(action="explanation.requeue", object_id=str(report_id)).count()
    log = worker_pool.log("steady")
    assert "explanations.tasks.finalize_report" in log
    summary.fault(
        "kill -9 Redis mid-report (no persistence), restart after 4 s",
        injected=1,
        outcome=f"report succeeded {recovered_seconds:.0f} s after the kill; {pending_at_kill} queued chunks lost, "
        f"{requeued} re-sent by the reaper",
        survived=True,
    )
