"""Parsing evaluation sets: CSV or JSON lines with a `text` and a `label`
for every row. The whole file is checked before anything is stored."""

import codecs
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from glassbox.errors import InvalidInput

CSV = "csv"
JSONL = "jsonl"


@dataclass
class ParsedDataset:
    format: str
    rows: list[tuple[str, str]]

    @property
    def labels(self) -> list[str]:
        return sorted({label for _, label in self.rows})


def detect_dataset_format(filename: str, head: bytes) -> str:
    lowered = filename.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return JSONL
    if lowered.endswith((".csv", ".tsv", ".txt")):
        return CSV
    return JSONL if head.lstrip().startswith(b"{") else CSV


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return codecs.decode(raw, "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"The dataset is not valid UTF-8 (byte {exc.start}).") from exc


def _clean_row(number: int, text, label) -> tuple[str, str]:
    if text is None or label is None:
        raise InvalidInput(f"Row {number} lacks a text or a label.")
    if isinstance(label, (dict, list)) or isinstance(text, (dict, list)):
        raise InvalidInput(f"Row {number}: text and label must be plain values.")
    text, label = str(text), str(label).strip()
    if not text.strip():
        raise InvalidInput(f"Row {number} has an empty text.")
    if not label:
        raise InvalidInput(f"Row {number} has an empty label.")
    if "\x00" in text or "\x00" in label:
        raise InvalidInput(f"Row {number} contains a NUL character.")
    if len(label) > 100:
        raise InvalidInput(f"Row {number}: labels are at most 100 characters.")
    return text, label


def parse_dataset(path: Path, *, filename: str, max_rows: int) -> ParsedDataset:
    with open(path, "rb") as handle:
        head = handle.read(1024)
    fmt = detect_dataset_format(filename, head)
    content = _decode(path)
    rows: list[tuple[str, str]] = []
    if fmt == CSV:
        try:
            reader = csv.DictReader(io.StringIO(content, newline=""))
            fields = reader.fieldnames or []
            if "text" not in fields or "label" not in fields:
                raise InvalidInput(
                    f"The CSV needs the columns 'text' and 'label' (found: {', '.join(fields) or 'none'})."
                )
            for number, record in enumerate(reader, start=1):
                if len(rows) >= max_rows:
                    raise InvalidInput(f"The dataset has more than {max_rows} rows.")
                rows.append(_clean_row(number, record.get("text"), record.get("label")))
        except csv.Error as exc:
            raise InvalidInput(f"The CSV could not be parsed: {exc}") from exc
    else:
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"Line {number} is not valid JSON: {exc.msg}.") from exc
            if not isinstance(record, dict) or "text" not in record or "label" not in record:
                raise InvalidInput(f"Line {number} needs an object with 'text' and 'label'.")
            if len(rows) >= max_rows:
                raise InvalidInput(f"The dataset has more than {max_rows} rows.")
            rows.append(_clean_row(number, record["text"], record["label"]))
    if not rows:
        raise InvalidInput("The dataset has no rows.")
    return ParsedDataset(fmt, rows)
