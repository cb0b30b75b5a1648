"""Limits defined once: the generated SQL matches them, and the record bound
holds for the worst documents the rules allow (pure)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from contracts.limits import (
    ID_MAX_CHARS,
    KAFKA_DEFAULT_MAX_RECORD_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_RECORD_BYTES,
    WHITESPACE,
    limits_sql,
)
from contracts.rules import canonical_number, check_document, number_digits, payload_stats
from relay.resources import data_dir


def test_generated_sql_is_up_to_date() -> None:
    assert (data_dir("sql") / "R__limits.sql").read_text() == limits_sql(), (
        "run `outbox db generate --write`"
    )


def test_whitespace_is_what_python_calls_whitespace() -> None:
    assert {c for c in range(0x110000) if chr(c).isspace()} == set(WHITESPACE)


def _stored_text_size(doc: object) -> int:
    """Postgres' jsonb text: compact JSON plus one space after each ',' and ':'."""
    return len(json.dumps(doc, ensure_ascii=False, separators=(", ", ": ")).encode())


@pytest.mark.parametrize(
    "payload",
    [
        {"a": [0] * ((MAX_PAYLOAD_BYTES - 8) // 2)},  # most separators per byte
        {str(i): 0 for i in range(6000)},
        {"s": "😀" * ((MAX_PAYLOAD_BYTES - 8) // 4)},
    ],
)
def test_no_accepted_document_exceeds_the_record_bound(payload: dict[str, object]) -> None:
    compact = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    assert payload_stats(payload).size == len(compact.encode()) <= MAX_PAYLOAD_BYTES
    worst_ids = {f: "😀" * n for f, n in ID_MAX_CHARS.items()}
    doc = {"notification_type": "batch_validation_failed", "category": "file_operations",
           "priority": "immediate", "action_required": True,
           "deadline_timestamp": "2099-01-01T00:00:00.000000+14:00", "payload": payload,
           **worst_ids}  # fmt: skip
    assert check_document(doc) == []
    record = _stored_text_size(doc)
    assert record <= MAX_RECORD_BYTES < KAFKA_DEFAULT_MAX_RECORD_BYTES


@pytest.mark.parametrize(
    ("text", "canonical", "digits"),
    [("1.50", "1.50", 3), ("1E+2", "100", 3), ("1.50E+1", "15.0", 3), ("-0.0", "0.0", 1),
     ("1E-15", "0.000000000000001", 15), ("0E+20", "0", 0), ("123456789012345", "123456789012345", 15),
     ("-12.5", "-12.5", 3)],
)  # fmt: skip
def test_numbers_are_measured_as_postgres_writes_them(
    text: str, canonical: str, digits: int
) -> None:
    assert canonical_number(Decimal(text)) == canonical
    assert number_digits(canonical) == digits
