"""Parallel decisions on real PostgreSQL with committed transactions: the
version row lock serializes deciders, so approvals never double-count and
the version moves exactly once."""

import threading
from collections import Counter

from django.db import connection

from governance import roles
from governance.audit_integrity import verify_chain
from governance.models import AuditEvent, Decision, ReviewRequest
from registry.models import ModelVersion
from tests.conftest import UserFactory, api_client_for
from tests.governance.reviewing import new_version, submitted_version, version_path


def users(prefix: str, count: int, role: str) -> list:
    # A raw unusable password skips the (slow) hashing: these log in by token.
    return [UserFactory(username=f"{prefix}{n:02d}", role=role, password="!") for n in range(count)]


def post_all_at_once(requests: list[tuple]) -> list:
    """POST every (user, path, body) from its own thread, released together
    by a barrier; returns the responses in the order given."""
    clients = [api_client_for(user) for user, _, _ in requests]  # tokens exist before the race
    responses: list = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def run(index: int) -> None:
        try:
            _, path, body = requests[index]
            barrier.wait()
            responses[index] = clients[index].post(path, body, format="json")
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def test_fifty_concurrent_approvals_make_exactly_one_transition(committed_db):
    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    version = submitted_version(uploader=engineer, risk_tier="medium")
    reviewers = users("reviewer", 50, roles.REVIEWER)
    path = version_path(version, "decisions/")

    responses = post_all_at_once([(user, path, {"decision": "approve", "comment": "ok"}) for user in reviewers])

    assert Counter(r.status_code for r in responses) == {201: 2, 409: 48}
    assert sorted(r.json()["version_status"] for r in responses if r.status_code == 201) == ["approved", "in_review"]
    # Every late decider was turned away at the door (after waiting for the
    # version lock), not half-way through a transition that then failed.
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json() == {
            "detail": f"{version} is approved; only a version in review can be decided on.",
            "code": "invalid_transition",
            "current_status": "approved",
        }
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.APPROVED and version.recertify_by is not None
    review = ReviewRequest.objects.get(version=version)
    assert review.status == "approved" and review.decisions.count() == 2
    approvers = {r.json()["reviewer"] for r in responses if r.status_code == 201}
    assert set(Decision.objects.values_list("reviewer__username", flat=True)) == approvers

    events = Counter(AuditEvent.objects.filter(model_name=version.model.name).values_list("action", "outcome"))
    assert events == {
        ("version.submit", "ok"): 1,
        ("review.open", "ok"): 1,
        ("review.approve", "ok"): 2,
        ("review.close", "ok"): 1,
        ("version.approve", "ok"): 1,
        ("review.approve", "denied"): 48,
    }
    assert AuditEvent.objects.get(action="version.approve").detail["approved_by"] == sorted(
        approvers, key=lambda name: Decision.objects.get(reviewer__username=name).id
    )
    # The chain stayed linear while 50 transactions appended to it.
    checked, broken = verify_chain()
    assert broken is None and checked == AuditEvent.objects.count()


def test_racing_approvals_and_rejects_close_the_review_exactly_once(committed_db):
    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    version = submitted_version(uploader=engineer, risk_tier="medium")
    reviewers = users("reviewer", 20, roles.REVIEWER)
    path = version_path(version, "decisions/")
    bodies = [{"decision": "approve" if n % 2 else "reject", "comment": f"verdict {n}"} for n in range(20)]

    responses = post_all_at_once([(user, path, body) for user, body in zip(reviewers, bodies, strict=True)])

    version.refresh_from_db()
    assert version.status in {"approved", "rejected"}
    moves = AuditEvent.objects.filter(action__in=["version.approve", "version.reject"], outcome="ok")
    expected_move = {"approved": "version.approve", "rejected": "version.reject"}[version.status]
    assert list(moves.values_list("action", flat=True)) == [expected_move]
    assert AuditEvent.objects.filter(action="review.close").count() == 1
    # Decisions stop at the first reject or the second approval, whichever came first.
    verdicts = list(Decision.objects.order_by("id").values_list("decision", flat=True))
    assert verdicts in (["reject"], ["approve", "reject"], ["approve", "approve"])
    assert version.status == ("rejected" if verdicts[-1] == "reject" else "approved")
    assert Counter(r.status_code for r in responses) == {201: len(verdicts), 409: 20 - len(verdicts)}


def test_concurrent_submits_open_one_review(committed_db):
    engineers = users("engineer", 10, roles.ENGINEER)
    version = new_version(uploader=engineers[0])

    responses = post_all_at_once([(user, version_path(version, "submit/"), {}) for user in engineers])

    assert Counter(r.status_code for r in responses) == {201: 1, 409: 9}
    assert ReviewRequest.objects.filter(version=version).count() == 1
    assert AuditEvent.objects.filter(action="version.submit").count() == 1
    assert AuditEvent.objects.filter(action="review.submit", outcome="denied").count() == 9


def test_an_approval_racing_a_finishing_report_records_a_consistent_snapshot(committed_db):
    """The report's success is written but not committed while a reviewer
    approves: the snapshot (read under the review's lock) leaves it out, the
    recorded evidence says so, and the review page lists the report "after
    the decision" although it finished first."""
    from django.db import transaction

    from explanations import services as report_services
    from governance import services
    from tests.conftest import page_client_for, wait_for
    from tests.explanations.reporting import FIDELITY, local_results, make_report

    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    reviewer = UserFactory(username="rita", role=roles.REVIEWER)
    version = submitted_version(uploader=engineer)
    before = make_report(version=version, requested_by=engineer, status="running")
    report_services.report_succeed(report_id=before.pk, results=local_results(["好"]), fidelity=FIDELITY, timings={})
    racing = make_report(version=version, requested_by=engineer, method="lime", status="running")
    written, release = threading.Event(), threading.Event()

    def finish_report() -> None:
        try:
            with transaction.atomic():
                report_services.report_succeed(
                    report_id=racing.pk, results=local_results(["差"]), fidelity=FIDELITY, timings={}
                )
                written.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    finisher = threading.Thread(target=finish_report)
    finisher.start()
    assert written.wait(timeout=30)
    decided: list = []

    def approve() -> None:
        try:
            decided.append(services.decision_record(actor=reviewer, version=version, decision="approve", comment="ok"))
        finally:
            connection.close()

    approver = threading.Thread(target=approve)
    approver.start()
    # Let the finisher commit only once the approver has its snapshot and
    # waits for the audit chain that the finisher holds.
    wait_for(chain_waiters, timeout=30, what="the approver waiting for the audit chain")
    release.set()
    finisher.join()
    approver.join()

    decision = Decision.objects.get(pk=decided[0].pk)
    assert [entry["id"] for entry in decision.evidence["reports"]] == [before.pk]
    racing.refresh_from_db()
    assert racing.status == "succeeded" and racing.finished_at < decision.created_at
    page = page_client_for(reviewer).get(f"/models/{version.model.name}/versions/{version.number}/review/")
    assert f'after the decision: <a href="/explanations/{racing.pk}/">LIME #{racing.pk}' in page.content.decode()
    assert verify_chain()[1] is None


def chain_waiters() -> int:
    """Sessions waiting for the audit chain's advisory lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return cursor.fetchone()[0]
