"""Every limit of a notification (and of a domain event), defined once.

The Python rules (:mod:`contracts.rules`) read these constants; the database
reads them from ``sql/R__limits.sql``, which :func:`limits_sql` generates from
this module (``outbox db generate --write``). A test proves both sides accept
and refuse the same documents.

Why these values:

* Ids are opaque, but they end up in Kafka keys, Redis keys, log lines and a
  teacher's browser: bounded, never blank, no control or invisible format
  characters (which would forge log lines or make two ids look the same).
* Payload numbers are limited to 15 decimal digits written out in plain form,
  so every number survives an IEEE double (a browser's ``JSON.parse``) exactly.
* The payload is measured as the UTF-8 bytes of its canonical compact JSON, the
  same way on both sides (see :func:`contracts.rules.payload_stats`).
* :data:`MAX_RECORD_BYTES` bounds the Kafka record of any row the database
  accepts, far below Kafka's and Connect's default 1 MiB record limits.
"""

from __future__ import annotations

# -- ids ----------------------------------------------------------------------

# Characters (code points) each id field may hold.
ID_MAX_CHARS: dict[str, int] = {
    "teacher_id": 128,
    "correlation_id": 256,
    "batch_id": 128,
    "class_id": 128,
}
REQUIRED_IDS = ("teacher_id", "correlation_id")
OPTIONAL_IDS = ("batch_id", "class_id")

# The id-like fields of a domain event (contracts/events.py), checked by the
# same rule; its correlation_id is the notification's.
EVENT_ID_MAX_CHARS: dict[str, int] = {
    "event_key": 128,  # the Kafka key: the aggregate the event is about
    "event_type": 128,
}
# Every id-like field, as the database's outbox.limit_id_max_chars() knows them.
ALL_ID_MAX_CHARS: dict[str, int] = {**ID_MAX_CHARS, **EVENT_ID_MAX_CHARS}

# Domain-event topics: huleedu.{service}.{entity}.{action}.v{N}, lower-case
# words; Kafka allows at most 249 characters in a topic name.
TOPIC_PATTERN = r"^huleedu\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.v[1-9][0-9]*$"
MAX_TOPIC_CHARS = 249

# Code point ranges no id may contain: C0 and C1 controls, soft hyphen, bidi
# and zero-width format characters, BOM, interlinear annotation, surrogates and
# the two noncharacters of the BMP's last block.
ID_FORBIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x061C, 0x061C),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x206F),
    (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0xFFFE, 0xFFFF),
)

# Unicode whitespace: what Python's str.isspace() matches, spelled out so that
# the database uses the very same set. An id made only of these is blank.
WHITESPACE: tuple[int, ...] = (
    0x0009, 0x000A, 0x000B, 0x000C, 0x000D, 0x001C, 0x001D, 0x001E, 0x001F,
    0x0020, 0x0085, 0x00A0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
    0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F,
    0x205F, 0x3000,
)  # fmt: skip

# -- the document ---------------------------------------------------------------

DOCUMENT_KEYS = (
    "teacher_id",
    "notification_type",
    "category",
    "priority",
    "payload",
    "action_required",
    "deadline_timestamp",
    "correlation_id",
    "batch_id",
    "class_id",
)

# -- payload --------------------------------------------------------------------

MAX_PAYLOAD_BYTES = 64 * 1024
# Containers nested inside each other, the payload object itself counting as 1.
MAX_PAYLOAD_DEPTH = 32
# Digits of a number written in plain decimal form: integer digits (leading
# zeros not counted) plus every fraction digit as written (1.50 has 3).
MAX_NUMBER_DIGITS = 15

# -- deadline -------------------------------------------------------------------

# RFC 3339 with a mandatory offset, seconds, optional microseconds; upper-case
# T and Z only. Python's ``re`` and Postgres' regular expressions read it alike.
DEADLINE_PATTERN = (
    "^([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    "T([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(\\.[0-9]{1,6})?"
    "(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])$"
)
DEADLINE_YEAR_MIN = 2000
DEADLINE_YEAR_MAX = 2199

# -- the whole record --------------------------------------------------------------

# Largest Kafka record value the router accepts. Any row the database accepts
# is smaller: the payload's stored text is at most 1.5x its canonical size plus
# one byte per separator, and the other fields are bounded above (a unit test
# checks the arithmetic); Kafka and Connect default to 1 MiB.
MAX_RECORD_BYTES = 160 * 1024
KAFKA_DEFAULT_MAX_RECORD_BYTES = 1024 * 1024


def _sql_regex_class(ranges: tuple[tuple[int, int], ...]) -> str:
    """A bracket expression for Postgres' regex engine (``\\uXXXX`` escapes);
    NUL is left out since Postgres text cannot hold it anyway."""
    parts = []
    for first, hi in ranges:
        lo = max(first, 1)
        if 0xD800 <= lo <= 0xDFFF:  # Postgres text cannot hold surrogates either
            continue
        parts.append(f"\\u{lo:04x}" if lo == hi else f"\\u{lo:04x}-\\u{hi:04x}")
    return "[" + "".join(parts) + "]"


def sql_literal(value: str | None) -> str:
    """A SQL string literal (NULL for None) for the generated migrations."""
    if value is None:
        return "NULL"
    return "'" + value.replace("'", "''") + "'"


def limits_sql() -> str:
    """The SQL that defines ``outbox.limit_*()`` from this module's constants."""
    ws = "[" + "".join(f"\\u{c:04x}" for c in WHITESPACE) + "]"
    fns = [
        ("limit_id_max_chars(field text)", "int",
         "SELECT CASE field "
         + " ".join(f"WHEN {sql_literal(k)} THEN {v}" for k, v in ALL_ID_MAX_CHARS.items())
         + " END"),
        ("limit_id_forbidden_re()", "text", f"SELECT {sql_literal(_sql_regex_class(ID_FORBIDDEN_RANGES))}"),
        ("limit_blank_re()", "text", f"SELECT {sql_literal('^' + ws + '*$')}"),
        ("limit_document_keys()", "text[]",
         "SELECT ARRAY[" + ", ".join(sql_literal(k) for k in DOCUMENT_KEYS) + "]"),
        ("limit_payload_bytes()", "int", f"SELECT {MAX_PAYLOAD_BYTES}"),
        ("limit_payload_depth()", "int", f"SELECT {MAX_PAYLOAD_DEPTH}"),
        ("limit_number_digits()", "int", f"SELECT {MAX_NUMBER_DIGITS}"),
        ("limit_topic_re()", "text", f"SELECT {sql_literal(TOPIC_PATTERN)}"),
        ("limit_topic_max_chars()", "int", f"SELECT {MAX_TOPIC_CHARS}"),
        ("limit_deadline_re()", "text", f"SELECT {sql_literal(DEADLINE_PATTERN)}"),
        ("limit_deadline_years()", "int4range",
         f"SELECT int4range({DEADLINE_YEAR_MIN}, {DEADLINE_YEAR_MAX}, '[]')"),
    ]  # fmt: skip
    out = [
        "-- Generated from contracts/limits.py by `outbox db generate`; do not edit.",
        "-- A repeatable migration: re-applied whenever its content changes.",
    ]
    for sig, returns, body in fns:
        out.append(
            f"CREATE OR REPLACE FUNCTION outbox.{sig} RETURNS {returns}\n"
            f"LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ {body} $$;"
        )
    return "\n".join(out) + "\n"
