"""The platform's three kinds of users, in a real browser (headless Chromium
through Playwright) against a live server with a real Celery worker (beat
included) on this machine's PostgreSQL and Redis.

One test, four journeys, because each journey starts where the previous one
ended: the version the engineer uploads and explains is the one the
reviewers approve, the engineer rolls out and aborts, and the manager audits.
The end state of each journey is saved under `screenshots/`."""

import csv
import io
import json
import re
import zipfile

import pytest
import requests
from django.db import connections
from playwright.sync_api import expect

from governance import services as review_services
from registry.models import ModelVersion
from rollouts import prediction_log, routing, serving_cache
from rollouts import services as rollout_services
from rollouts.models import Rollout
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import wait_for
from tests.rollouts.rollout_helpers import chinese_reviews

pytestmark = [pytest.mark.browser, pytest.mark.worker]

PASSWORD = "correct horse battery staple"  # every persona's (tests/conftest.py)
MODEL = "zh-review-bert"
# Short texts keep the SHAP report to seconds on two cores.
REPORT_TEXTS = ["这本书很好看", "质量太差了，不推荐", "物流很快，包装完好"]


def repacked(zip_path) -> bytes:
    """The same model files in a stored (uncompressed) zip: other bytes, so
    the registry takes it as a new artifact, the same predictions."""
    out = io.BytesIO()
    with zipfile.ZipFile(zip_path) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            target.writestr(name, source.read(name))
    return out.getvalue()


def token_for(base_url: str, username: str) -> dict:
    response = requests.post(
        f"{base_url}/api/v1/auth/token/", data={"username": username, "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Token {response.json()['token']}"}


def upload_over_http(base_url: str, headers: dict, data: bytes, **card) -> dict:
    """What `curl -F artifact=@bert.zip -F flavor=transformers ...` sends."""
    response = requests.post(
        f"{base_url}/api/v1/models/{MODEL}/versions/",
        headers=headers,
        files={"artifact": ("bert.zip", data, "application/zip")},
        data={"flavor": "transformers", "metrics": json.dumps({"accuracy": 0.81}), **card},
        timeout=300,
    )
    assert response.status_code == 201, response.text
    return response.json()


def predict_over_http(base_url: str, headers: dict, texts: list[str]) -> list[dict]:
    response = requests.post(
        f"{base_url}/api/v1/models/{MODEL}/predict/", headers=headers, json={"inputs": texts}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def signed_in(browser, base_url: str, username: str):
    """A fresh browser context (its own cookies) signed in through the login page."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto("/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/models/$"))
    expect(page.locator(".who")).to_contain_text(username)
    return page


def shot(page, name: str) -> None:
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


@pytest.fixture
def fresh_serving_caches():
    """This process serves the live server: no routing or permission cached
    from other tests, and the prediction-log writer's rows on disk before the
    test's rows are flushed away."""
    routing.clear_routing_cache()
    serving_cache.clear_permission_cache()
    prediction_log.reset_writer()
    yield
    prediction_log.flush_prediction_logs(timeout=30)
    prediction_log.reset_writer()
    routing.clear_routing_cache()
    serving_cache.clear_permission_cache()


@pytest.mark.usefixtures("committed_db", "fresh_serving_caches")
def test_engineer_reviewers_and_manager_journeys_in_a_real_browser(
    live_server,
    browser,
    worker_pool,
    demo_models,
    engineer,
    reviewer,
    reviewer2,
    manager,
    settings,
):
    try:
        all_four_journeys(live_server.url, browser, worker_pool, demo_models, engineer, reviewer, reviewer2, settings)
    finally:
        # With Playwright's loop in this thread, the ORM calls above ran on a
        # database connection of their own (not the one the fixtures' flush
        # uses); left open, it would keep the test database from being dropped.
        connections.close_all()


def all_four_journeys(base_url, browser, worker_pool, demo_models, engineer, reviewer, reviewer2, settings):
    # Rollout analysis every 2 s: the live server's settings and the worker's beat agree.
    settings.GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS = 1
    worker_pool.start(
        "browser", beat=True, env={"GLASSBOX_ROLLOUT_TICK_SECONDS": "1", "GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS": "1"}
    )

    # The engineer's token, a medium-risk model (two approvals) and its v1 over HTTP;
    # v1 is approved and deployed through the services, to be the stable a rollout starts from.
    erin = token_for(base_url, "erin")
    response = requests.post(
        f"{base_url}/api/v1/models/",
        headers=erin,
        timeout=30,
        json={
            "name": MODEL,
            "task": "text-classification",
            "risk_tier": "medium",
            "description": "中文评论情感分类（字符级 BERT）",
        },
    )
    assert response.status_code == 201, response.text
    upload_over_http(base_url, erin, demo_models["bert_zip"].read_bytes(), description="第一版")
    v1 = ModelVersion.objects.get(model__name=MODEL, number=1)
    review_services.review_submit(actor=engineer, version=v1)
    for person in (reviewer, reviewer2):
        review_services.decision_record(actor=person, version=v1, decision="approve", comment="v1 ok")
    first = rollout_services.rollout_start(actor=engineer, model=v1.model, candidate=v1)
    assert first.status == Rollout.Status.PROMOTED

    # Journey 1 -- engineer: upload v2 and submit it over HTTP, then ask for a SHAP
    # report on the version page and watch its progress bar finish.
    body = upload_over_http(
        base_url,
        erin,
        repacked(demo_models["bert_zip"]),
        description="第二版：重新打包",
        intended_use="中文商品评论的情感分析",
        limitations="只在短评论上训练过",
    )
    assert body["version"] == 2 and body["status"] == "registered"
    response = requests.post(f"{base_url}/api/v1/models/{MODEL}/versions/2/submit/", headers=erin, timeout=30)
    assert response.status_code in (200, 201), response.text

    page = signed_in(browser, base_url, "erin")
    page.goto(f"/models/{MODEL}/versions/2/")
    expect(page.locator("h1 .status")).to_have_text("in_review")
    form = page.locator("details.new-report")
    form.locator("summary").click()
    form.locator("select[name=method]").select_option("shap")
    form.locator("textarea[name=texts]").fill("\n".join(REPORT_TEXTS))
    form.locator("textarea[name=params]").fill('{"max_evals": 64, "seed": 7}')
    # How long first: the form comes back filled in, with the estimate.
    form.locator("button[value=estimate]").click()
    expect(page.locator("#report-estimate")).to_contain_text("Estimated time: about")
    page.get_by_role("button", name="Request report").click()
    page.wait_for_url(re.compile(r"/explanations/\d+/$"))
    report_id = int(re.search(r"/explanations/(\d+)/$", page.url).group(1))
    # The page polls the report and reloads itself when it finishes.
    expect(page.locator("#report-status")).to_contain_text("succeeded", timeout=150_000)
    expect(page.locator("#report-progress")).to_have_attribute("value", "100")
    expect(page.locator("#report-progress-text")).to_have_text("100%")
    shot(page, "1-engineer-report-finished")
    page.context.close()

    # Journey 2 -- two reviewers: queue, review page, the report's heat map and
    # fidelity panel, approve with a comment; after the second the version is approved.
    for number, username in enumerate(("rita", "ravi"), start=1):
        page = signed_in(browser, base_url, username)
        page.get_by_role("link", name="Reviews").click()
        page.wait_for_url(re.compile(r"/reviews/$"))
        row = page.locator("table.grid tbody tr", has_text=MODEL)
        expect(row).to_have_count(1)
        row.get_by_role("link", name="Review now").click()
        page.wait_for_url(re.compile(rf"/models/{MODEL}/versions/2/review/$"))
        page.locator("section.evidence").get_by_role("link", name=f"#{report_id}").click()
        page.wait_for_url(re.compile(rf"/explanations/{report_id}/$"))
        heatmap = page.locator("section.heatmap")
        expect(heatmap).to_be_visible()
        expect(heatmap.locator(".heatmap-text")).to_have_count(len(REPORT_TEXTS))
        assert heatmap.locator("span.token").count() >= sum(len(text) for text in REPORT_TEXTS) // 2
        assert heatmap.locator("span.token").first.get_attribute("title")  # exact value on hover
        fidelity = page.locator("section.fidelity")
        expect(fidelity).to_be_visible()
        expect(fidelity.locator("tbody tr").first).to_be_visible()
        expect(fidelity).to_contain_text("SHAP additivity")
        if number == 1:
            shot(page, "2-reviewer-heatmap-and-fidelity")
        page.go_back()
        page.wait_for_url(re.compile(r"/review/$"))
        page.fill("textarea[name=comment]", f"热力图合理，{username} 同意上线")
        page.click("button[name=decision][value=approve]")
        expect(page.locator("main dl").first).to_contain_text(f"{number} of 2 required")
        # The decision shows the evidence it was made on, and that this reviewer opened it.
        decided_on = page.locator("article.decision", has_text=f"{username} 同意上线").locator("p.decided-on")
        expect(decided_on).to_contain_text(f"decided on: SHAP #{report_id} (comp ")
        expect(decided_on).to_contain_text("vs random")
        expect(decided_on.locator(".label")).to_have_text("opened")
        if number == 2:
            page.goto(f"/models/{MODEL}/versions/2/")
            expect(page.locator("h1 .status")).to_have_text("approved")
            shot(page, "2-version-approved")
        page.context.close()
    assert ModelVersion.objects.get(model__name=MODEL, number=2).status == ModelVersion.Status.APPROVED

    # Journey 3 -- engineer: start a rollout of v2 on the rollout page, send traffic
    # over HTTP, watch analysis runs appear, abort (with its confirmation).
    page = signed_in(browser, base_url, "erin")
    page.goto(f"/models/{MODEL}/rollouts/")
    start = page.locator("#start-rollout form")
    start.locator("select[name=candidate]").select_option(label="v2")
    start.locator("select[name=steps_preset]").select_option("no-shadow")
    start.locator("input[name=analysis_interval_seconds]").fill("15")
    # Lenient bounds: a tiny canary of a repacked copy must not be aborted by the
    # analysis before a person presses abort.
    for name, value in {"min_requests": "3", "max_latency_p95_ratio": "50", "max_label_divergence": "1"}.items():
        start.locator(f"input[name=threshold_{name}]").fill(value)
    start.get_by_role("button", name="Start rollout").click()
    page.wait_for_url(re.compile(r"/rollouts/\d+/$"))
    rollout = Rollout.objects.get(pk=int(re.search(r"/rollouts/(\d+)/$", page.url).group(1)))
    expect(page.locator("#rollout-status")).to_have_text("progressing")
    expect(page.locator("#candidate-weight")).to_have_text("5 %")

    # Traffic from the start, so the first analysis (15 s after the step began) has
    # candidate requests to judge.
    texts = chinese_reviews(256)
    served = []

    def analysed_while_serving() -> bool:
        # Full batches (64 inputs): at 5 % each batch sends about three inputs to the candidate.
        for begin in range(0, len(texts), 64):
            served.extend(predict_over_http(base_url, erin, texts[begin : begin + 64]))
        page.reload()
        return page.locator(".run").count() > 0

    wait_for(analysed_while_serving, timeout=90, interval=0, what="an analysis run of the rollout")
    assert {(answer["version"], answer["route"]) for answer in served} >= {(1, "stable"), (2, "candidate")}
    first_run = page.locator(".run").last  # newest first
    expect(first_run.locator("h3 .verdict")).to_have_text("successful")
    expect(first_run.locator("tbody tr", has_text="error_rate")).to_contain_text("successful")
    expect(page.locator("#rollout-status")).to_have_text("progressing")

    abort = page.locator("form.gate", has=page.locator("button[value=abort]"))
    abort.locator("textarea[name=reason]").fill("浏览器测试：人工中止")
    abort.locator("button[value=abort]").click()
    # Unconfirmed, the browser does not even send the form: the box is required.
    confirm = abort.locator("input[name=confirm]")
    assert confirm.evaluate("box => box.validity.valueMissing")
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.PROGRESSING
    confirm.check()
    abort.locator("button[value=abort]").click()
    expect(page.locator("#rollout-status")).to_have_text("aborted")
    expect(page.locator("#candidate-weight")).to_have_text("0 %")
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.ABORTED

    after = []
    for begin in range(0, 120, 20):
        after.extend(predict_over_http(base_url, erin, texts[begin : begin + 20]))
    assert len(after) == 120 and {(answer["version"], answer["route"]) for answer in after} == {(1, "stable")}
    shot(page, "3-rollout-aborted")
    page.context.close()

    # Journey 4 -- manager: the audit trail filtered by model, its CSV export, and
    # the dossier printed.
    page = signed_in(browser, base_url, "max")
    page.get_by_role("link", name="Audit trail").click()
    page.fill("form.filters input[name=model]", MODEL)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(rf"/audit/\?.*model={MODEL}"))
    rows = page.locator("table.audit tbody tr")
    expect(rows.first).to_contain_text(MODEL)
    shown = rows.count()
    assert shown >= 10
    for index in range(shown):
        expect(rows.nth(index).locator("td").nth(6)).to_contain_text(MODEL)
    shot(page, "4-audit-trail-filtered")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="CSV").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    with open(download.path(), encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    assert len(exported) >= shown and {row["model_name"] for row in exported} == {MODEL}
    actions = {row["action"] for row in exported}
    assert {"version.create", "version.submit", "review.approve", "rollout.start", "rollout.abort"} <= actions, actions
    assert any("同意上线" in row["changes"] + row["detail"] for row in exported)

    page.goto(f"/models/{MODEL}/versions/2/dossier/")
    dossier = page.locator("article.dossier")
    expect(dossier).to_contain_text("Compliance dossier")
    expect(dossier).to_contain_text("rita 同意上线")
    expect(dossier).to_contain_text("ravi 同意上线")
    evidence = dossier.locator("article.decision p.decided-on")
    expect(evidence).to_have_count(2)
    for index in range(2):
        expect(evidence.nth(index)).to_contain_text(f"decided on: SHAP #{report_id} (comp ")
    page.emulate_media(media="print")
    expect(page.locator("header.topbar")).to_be_hidden()
    shot(page, "4-dossier-print")
    pdf = page.pdf(path=SCREENSHOTS / "4-dossier.pdf", format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    page.context.close()
