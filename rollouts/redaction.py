"""Personal data taken out of a text before it is stored (README "Personal
data in prediction logs").

`redact(text)` replaces, by typed placeholders, what identifies a person in
mainland-Chinese customer text:

    mobile numbers          〈手机号〉   1[3-9]x xxxx xxxx, optional +86 / 0086, spaces, dashes or dots 3-4-4
    landlines               〈电话〉     0 + 2-3 digit area code + 7-8 digits (and an extension);
                                        7-8 digits alone only right after 电话 / 座机 / Tel
    resident ID numbers     〈身份证〉   18 digits (last may be X) with a valid birth date and the
                                        ISO 7064 MOD 11-2 check character; the old 15-digit form only
                                        right after 身份证 / 证件号 (it has no check digit)
    bank card numbers       〈银行卡〉   16-19 digits starting 3-6 (optionally in groups of 4) passing Luhn,
                                        except 18 digits shaped like an ID (region, birth date) that failed
                                        the ID check: a mistyped ID, not a card
    e-mail addresses        〈邮箱〉
    URLs with user info     〈网址〉     scheme://user[:password]@host... (the whole URL)
    IP addresses            〈IP〉       valid IPv4 (four parts 0-255, no leading zeros) and IPv6

What is left alone on purpose: prices (¥1399.00), dates, times, numbers of
other lengths, 18-digit numbers failing the ID check, card-length numbers
failing Luhn, dotted numbers that are not a valid IPv4 (1.2.3.400, 1.2.3.4.5)
or follow a letter (v1.2.3.4), model numbers (iPhone15, RTX4090), and
numbers announced as an order, waybill, serial or model number (订单号,
运单号, 编号, 流水号, 型号, 序列号...) even when they would pass a check.
Written-out numerals (一三八...) and IPv6 without a single digit are not
recognised.

Detection runs on a normalised copy (full-width ASCII such as ０-９, ＠, ．
and the ideographic space mapped to their ASCII forms, dashes to "-"),
which has the same length as the original, so the spans found there are
replaced in the original text. Spans never overlap: the rules are tried in
the order above from the most specific (URL, e-mail, ID) to the least (IP)
and a later rule never takes characters an earlier one took. Redacting a
redacted text changes nothing (the placeholders hold no digit or @).

Cost: a text without an ASCII or full-width digit and without @ returns
after one precompiled search; otherwise one pass per rule (bench/redaction.py
prints the cost per row).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import date

PHONE = "手机号"
LANDLINE = "电话"
ID_CARD = "身份证"
BANK_CARD = "银行卡"
EMAIL = "邮箱"
URL = "网址"
IP = "IP"

KINDS = (PHONE, LANDLINE, ID_CARD, BANK_CARD, EMAIL, URL, IP)
PLACEHOLDERS = {kind: f"〈{kind}〉" for kind in KINDS}
# Drift profiles leave placeholders out of the character counts (rollouts/drift.py),
# so they can never look like drift or like characters a model does not know.
PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))

# Without one of these nothing can match: the common case costs one search.
_MAY_HOLD_PERSONAL_DATA = re.compile(r"[0-9\uff10-\uff19@\uff20]")

# Full-width ASCII (U+FF01-FF5E) to ASCII, ideographic space to space, dashes
# to "-": one character for one, so positions stay those of the original.
_NORMALISED = {chr(code): chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)} | {"\u3000": " "}
_NORMALISED |= {dash: "-" for dash in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"}
# Only the characters a rule reads are mapped (Chinese text is full of "，" and
# "！", which none of them does): a substitution per such character, not per character.
_NEEDS_NORMALISING = re.compile(
    "[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\uff20\uff0e\uff1a\uff08\uff09\uff0d\uff0b\uff0f\uff3f"
    "\uff05\uff03\u3000\u2010-\u2015\u2212]"
)


def _normalised_character(match: re.Match) -> str:
    return _NORMALISED[match.group()]


# A run of digits and what separates them in a number: the numeric rules only
# look at these runs (and a little around them), not at the whole text.
_NUMBER_RUN = re.compile(r"[0-9][0-9Xx ()+\-.:]*", re.ASCII)
# How far around a run a numeric rule may look: a "+" or "(" before it, an
# extension ("转" and up to 5 digits) and the end checks after it.
_RUN_BEFORE, _RUN_AFTER = 1, 8
# The shortest number a rule takes: 7 characters (a local landline, 8.8.8.8).
_SHORTEST_NUMBER = 7

# Not glued to a letter or digit on either side (\b would treat CJK as word
# characters), nor joined to one by "-" or "." (a part of a product code, a decimal).
_START = r"(?<![0-9A-Za-z])(?<![0-9A-Za-z][\-.])"
_END = r"(?![0-9A-Za-z])(?![\-.][0-9A-Za-z])"

_URL_WITH_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,20}://"
    r"[A-Za-z0-9\-._~%!$&'()*+,;=:]+@"
    # The rest of the URL, not ending on punctuation that closes the sentence.
    r"[A-Za-z0-9\-._~%!$&'()*+,;=:/?#\[\]@]*[A-Za-z0-9\-_~%$&*+=/#\]]",
    re.ASCII,
)
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])",
    re.ASCII,
)
_ID_18 = re.compile(
    _START
    + r"[1-9][0-9]{5}[ \-]?(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[ \-]?[0-9]{3}[0-9Xx]"
    + _END,
    re.ASCII,
)
_ID_15 = re.compile(
    _START + r"[1-9][0-9]{5}[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}" + _END, re.ASCII
)
_ID_SHAPE = re.compile(r"[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9X]$")
_BANK_CARD = re.compile(_START + r"[3-6][0-9]{3}(?:[ \-]?[0-9]{4}){3}(?:[ \-]?[0-9]{1,3})?" + _END, re.ASCII)
_MOBILE = re.compile(
    r"(?<![0-9A-Za-z+])(?<![0-9A-Za-z][\-.])(?:(?:\+|00)?86[ \-]?)?1[3-9][0-9](?:[ \-.]?[0-9]{4}){2}" + _END,
    re.ASCII,
)
_LANDLINE = re.compile(
    _START + r"(?:(?:\+86|0086)[ \-]?\(?[1-9][0-9]{1,2}\)?|\(0[1-9][0-9]{1,2}\)|0[1-9][0-9]{1,2})[ \-]?"
    r"[2-9][0-9]{2,3}[ \-]?[0-9]{4}(?:(?:-|转|ext\.?)[0-9]{1,5})?" + _END,
    re.ASCII,
)
_LOCAL_LANDLINE = re.compile(_START + r"[2-9][0-9]{2,3}[ \-]?[0-9]{4}" + _END, re.ASCII)
_IPV4 = re.compile(
    r"(?<![0-9A-Za-z.])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?![0-9A-Za-z]|\.[0-9])",
    re.ASCII,
)
_IPV6 = re.compile(r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z:])", re.ASCII)

# What just before a number says it is not a person's: it is an order, a
# waybill, a serial or a model number. Looked for in the few characters before it.
_NOT_PERSONAL_BEFORE = re.compile(
    r"(?:订单|单号|编号|流水|货号|型号|批号|序列号|工单|快递|运单|物流|条码|sku|SKU|SN|S/N|No\.?|NO\.?)"
    r"[号码]?[ \t]*[:#]?[ \t]*(?:是|为)?[ \t]*$"
)
_ID_15_BEFORE = re.compile(r"(?:身份证|证件)[号码]*[ \t]*[:#]?[ \t]*(?:是|为)?[ \t]*$")
_LOCAL_LANDLINE_BEFORE = re.compile(r"(?:电话|座机|固话|[Tt]el\.?|TEL\.?)[号码]*[ \t]*[:#]?[ \t]*(?:是|为)?[ \t]*$")
_CONTEXT_CHARS = 12

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


@dataclass(frozen=True)
class Found:
    kind: str
    start: int
    end: int


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit() or ch in "Xx").upper()


def id_checksum_ok(number: str) -> bool:
    """ISO 7064 MOD 11-2 over the 17 first digits of an 18-character ID."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(digit) * weight for digit, weight in zip(number[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == number[17].upper()


def _valid_birth_date(year: int, month: int, day: int) -> bool:
    try:
        born = date(year, month, day)
    except ValueError:
        return False
    return born <= date.today()


def luhn_ok(number: str) -> bool:
    total = 0
    for index, digit in enumerate(reversed(number)):
        value = int(digit)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _before(text: str, start: int, pattern: re.Pattern) -> bool:
    return pattern.search(text, max(0, start - _CONTEXT_CHARS), start) is not None


def _is_id_18(text: str, match: re.Match) -> bool:
    number = _digits(match.group())
    if not id_checksum_ok(number) or _before(text, match.start(), _NOT_PERSONAL_BEFORE):
        return False
    return _valid_birth_date(int(number[6:10]), int(number[10:12]), int(number[12:14]))


def _is_id_15(text: str, match: re.Match) -> bool:
    number = match.group()
    return _before(text, match.start(), _ID_15_BEFORE) and _valid_birth_date(
        1900 + int(number[6:8]), int(number[8:10]), int(number[10:12])
    )


def _is_bank_card(text: str, match: re.Match) -> bool:
    number = _digits(match.group())
    if not (16 <= len(number) <= 19 and luhn_ok(number)) or _before(text, match.start(), _NOT_PERSONAL_BEFORE):
        return False
    # Shaped like an ID number (region, birth date) whose check failed: one in ten of
    # those passes Luhn by chance, and such a number is a mistyped ID far more often
    # than a card (18-digit cards start 62 and a 19xx/20xx "birth year" rarely follows).
    return not (len(number) == 18 and _ID_SHAPE.match(number))


def _not_announced_otherwise(text: str, match: re.Match) -> bool:
    return not _before(text, match.start(), _NOT_PERSONAL_BEFORE)


def _is_local_landline(text: str, match: re.Match) -> bool:
    return _before(text, match.start(), _LOCAL_LANDLINE_BEFORE)


def _is_ipv6(text: str, match: re.Match) -> bool:
    candidate = match.group()
    if sum(ch.isdigit() for ch in candidate) == 0 or sum(1 for group in candidate.split(":") if group) < 2:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _always(text: str, match: re.Match) -> bool:
    return True


# Whole-text rules, tried first: (kind, pattern, character that must be in the text).
_TEXT_RULES = ((URL, _URL_WITH_USERINFO, "@"), (EMAIL, _EMAIL, "@"))
# Numeric rules, most specific first: (kind, pattern, check of a match in its
# context, digits a run needs at least, dots it needs at least).
_NUMBER_RULES = (
    (ID_CARD, _ID_18, _is_id_18, 17, 0),
    (ID_CARD, _ID_15, _is_id_15, 15, 0),
    (BANK_CARD, _BANK_CARD, _is_bank_card, 16, 0),
    (PHONE, _MOBILE, _not_announced_otherwise, 11, 0),
    (LANDLINE, _LANDLINE, _not_announced_otherwise, 10, 0),
    (LANDLINE, _LOCAL_LANDLINE, _is_local_landline, 7, 0),
    (IP, _IPV4, _always, 4, 3),
)


def find_personal_data(text: str) -> list[Found]:
    """The spans of `text` that `redact` replaces, in text order."""
    if not text or _MAY_HOLD_PERSONAL_DATA.search(text) is None:
        return []
    normalised = _NEEDS_NORMALISING.sub(_normalised_character, text)
    taken: list[Found] = []

    def take(kind: str, pattern: re.Pattern, accept, start: int = 0, end: int | None = None) -> None:
        for match in pattern.finditer(normalised, start, len(normalised) if end is None else end):
            begin, finish = match.span()
            if any(begin < other.end and other.start < finish for other in taken):
                continue
            if accept(normalised, match):
                taken.append(Found(kind, begin, finish))

    for kind, pattern, needed in _TEXT_RULES:
        if needed in normalised:
            take(kind, pattern, _always)
    # (window start, window end, digits, dots) of each run of a number.
    runs = []
    for run in _NUMBER_RUN.finditer(normalised):
        number = run.group()
        if len(number) < _SHORTEST_NUMBER:
            continue  # a year, a price, a count: nothing any rule takes is this short
        digits = sum(1 for ch in number if "0" <= ch <= "9")
        runs.append((max(0, run.start() - _RUN_BEFORE), run.end() + _RUN_AFTER, digits, number.count(".")))
    for kind, pattern, accept, min_digits, min_dots in _NUMBER_RULES:
        for start, end, digits, dots in runs:
            if digits >= min_digits and dots >= min_dots:
                take(kind, pattern, accept, start, min(end, len(normalised)))
    # A valid IPv6 address has "::" or seven colons; letters may start it, so it is looked for in the whole text.
    if "::" in normalised or normalised.count(":") >= 7:
        take(IP, _IPV6, _is_ipv6)
    taken.sort(key=lambda found: found.start)
    return taken


def redact(text: str) -> str:
    """`text` with its personal data replaced by typed placeholders."""
    found = find_personal_data(text)
    if not found:
        return text
    pieces, position = [], 0
    for span in found:
        pieces.append(text[position : span.start])
        pieces.append(PLACEHOLDERS[span.kind])
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces)


def placeholder_kinds(text: str) -> list[str]:
    """The kinds of the placeholders in a (redacted) text, in order."""
    return [match.group()[1:-1] for match in PLACEHOLDER_RE.finditer(text)]
