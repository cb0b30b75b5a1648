"""Notification documents, valid and hostile, as JSON text (shared by the
adversarial tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from contracts import CATALOG, DeadlineRule
from contracts.catalog import requires_batch_id, requires_class_id
from contracts.limits import ID_MAX_CHARS, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH


@dataclass(frozen=True)
class Raw:
    """JSON text put into a document as it is (a number as written, a broken value)."""

    text: str


def dumps(v: Any) -> str:
    """JSON text of ``v``; :class:`Raw` parts verbatim; strings with surrogates or
    NUL escaped (as a buggy writer would send them)."""
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(dumps(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=any(0xD800 <= ord(c) <= 0xDFFF for c in v))
    return json.dumps(v)


def future(hours: float = 24) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def base(t: str = "class_created", teacher: str = "teacher-1") -> dict[str, Any]:
    e = CATALOG[t]
    return {
        "teacher_id": teacher,
        "notification_type": t,
        "category": e.category.value,
        "priority": e.priority.value,
        "payload": {"n": 1, "text": "hello"},
        "action_required": e.action_required,
        "deadline_timestamp": future() if e.deadline is DeadlineRule.REQUIRED else None,
        "correlation_id": "corr-1",
        "batch_id": "b-1" if requires_batch_id(t) else None,
        "class_id": "c-1" if requires_class_id(t) else None,
    }


def nest(depth: int) -> Raw:
    """An object ``depth`` containers deep (the payload object counting as 1)."""
    return Raw('{"a":' * depth + "1" + "}" * depth)


def with_(doc: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out = dict(doc)
    for k, v in kw.items():
        if v is _DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


_DROP = object()
DROP = _DROP


def hostile() -> dict[str, str]:
    """Named hostile documents (JSON text): the ones the issue lists and more."""
    b = base()
    crit = base("student_matching_deadline_approaching")
    batch = base("batch_validation_failed")
    big = MAX_PAYLOAD_BYTES
    cases: dict[str, Any] = {
        "valid": b,
        "valid critical": crit,
        "deep payload 33": with_(b, payload=nest(MAX_PAYLOAD_DEPTH + 1)),
        "deep payload 33 via array": with_(b, payload={"a": Raw("[" * 32 + "]" * 32)}),
        "deep payload 32 via array": with_(b, payload={"a": Raw("[" * 31 + "]" * 31)}),
        "deep payload 32 (limit)": with_(b, payload=nest(MAX_PAYLOAD_DEPTH)),
        "deep payload 300": with_(b, payload=nest(300)),
        "deep payload 1500": with_(b, payload=nest(1500)),
        "deep array 1500": with_(b, payload={"a": Raw("[" * 1500 + "]" * 1500)}),
        "5000-digit number": with_(b, payload={"n": Raw("9" * 5000)}),
        "16-digit integer": with_(b, payload={"n": Raw("1234567890123456")}),
        "15-digit integer": with_(b, payload={"n": Raw("123456789012345")}),
        "17 significant digits": with_(b, payload={"n": Raw("1.0000000000000001")}),
        "trailing zeros 1.50": with_(b, payload={"n": Raw("1.50")}),
        "scale 16 zeros": with_(b, payload={"n": Raw("0.0000000000000000")}),
        "1e400": with_(b, payload={"n": Raw("1e400")}),
        "1e-400": with_(b, payload={"n": Raw("1e-400")}),
        "1e2": with_(b, payload={"n": Raw("1e2")}),
        "0e20": with_(b, payload={"n": Raw("0e20")}),
        "-0.0": with_(b, payload={"n": Raw("-0.0")}),
        "1e-15": with_(b, payload={"n": Raw("1e-15")}),
        "NaN": with_(b, payload={"n": Raw("NaN")}),
        "Infinity": with_(b, payload={"n": Raw("Infinity")}),
        "1.1 MB teacher_id": with_(b, teacher_id="t" * 1_100_000),
        "129-char teacher_id": with_(b, teacher_id="t" * 129),
        "128-char teacher_id": with_(b, teacher_id="t" * 128),
        "128 astral chars teacher_id": with_(b, teacher_id="😀" * 128),
        "257-char correlation_id": with_(b, correlation_id="c" * 257),
        "tab-only teacher_id": with_(b, teacher_id="\t"),
        "NBSP-only teacher_id": with_(b, teacher_id="\u00a0\u3000"),
        "ideographic-space correlation_id": with_(b, correlation_id="\u3000"),
        "newline in teacher_id": with_(b, teacher_id="t1\nINFO forged log line"),
        "RTL mark in teacher_id": with_(b, teacher_id="t\u200f1"),
        "zero-width space in teacher_id": with_(b, teacher_id="t\u200b1"),
        "BOM in teacher_id": with_(b, teacher_id="\ufefft1"),
        "NUL in teacher_id": with_(b, teacher_id="t\x001"),
        "lone surrogate in teacher_id": with_(b, teacher_id="t\ud800"),
        "lone surrogate in payload": with_(b, payload={"s": "x\udc00"}),
        "NUL in payload": with_(b, payload={"s": "a\x00b"}),
        "NUL in payload key": with_(b, payload={"a\x00": 1}),
        "NFC teacher_id": with_(b, teacher_id="caf\u00e9"),
        "NFD teacher_id": with_(b, teacher_id="cafe\u0301"),
        "emoji and U+2028 in payload": with_(b, payload={"s": '😀\u2028\u2029é"\\'}),
        "number teacher_id": with_(b, teacher_id=7),
        "object teacher_id": with_(b, teacher_id={"id": "t"}),
        "boolean correlation_id": with_(b, correlation_id=True),
        "number class_id": with_(b, class_id=5),
        "empty class_id": with_(b, class_id=""),
        "missing teacher_id": with_(b, teacher_id=DROP),
        "null teacher_id": with_(b, teacher_id=None),
        "missing category": with_(b, category=DROP),
        "missing notification_type": with_(b, notification_type=DROP),
        "number notification_type": with_(b, notification_type=5),
        "unknown type": with_(b, notification_type="class_deleted"),
        "extra key": with_(b, extra="x"),
        "extra key txid": with_(b, txid="99999999999"),
        "priority upper case": with_(b, priority="STANDARD"),
        "priority as array": with_(b, priority=["standard"]),
        "action_required as string": with_(b, action_required="false"),
        "action_required null": with_(b, action_required=None),
        "action_required missing": with_(b, action_required=DROP),
        "action_required 0": with_(b, action_required=0),
        "payload missing": with_(b, payload=DROP),
        "payload null": with_(b, payload=None),
        "payload array": with_(b, payload=[1]),
        "payload string": with_(b, payload="x"),
        "payload at limit": with_(b, payload={"s": "x" * (big - 8)}),
        "payload one over": with_(b, payload={"s": "x" * (big - 7)}),
        "payload 32000 x é": with_(b, payload={"s": "é" * 32000}),
        "payload 33000 x é": with_(b, payload={"s": "é" * 33000}),
        "payload many small": with_(b, payload={"a": [0] * 30000}),
        "deadline +00": with_(crit, deadline_timestamp="2099-01-01T00:00:00+00"),
        "deadline 24:00": with_(crit, deadline_timestamp="2099-01-01T24:00:00Z"),
        "deadline year 10000": with_(crit, deadline_timestamp="10000-01-01T00:00:00Z"),
        "deadline year 2200": with_(crit, deadline_timestamp="2200-01-01T00:00:00Z"),
        "deadline year 2199": with_(crit, deadline_timestamp="2199-12-31T23:59:59Z"),
        "deadline Jan 1 2099": with_(crit, deadline_timestamp="Jan 1 2099 00:00Z"),
        "deadline naive": with_(crit, deadline_timestamp="2099-01-01T00:00:00"),
        "deadline Feb 30": with_(crit, deadline_timestamp="2099-02-30T00:00:00Z"),
        "deadline Feb 29 leap": with_(crit, deadline_timestamp="2096-02-29T00:00:00Z"),
        "deadline Feb 29 non-leap": with_(crit, deadline_timestamp="2099-02-29T00:00:00Z"),
        "deadline +14:59": with_(crit, deadline_timestamp="2099-01-01T00:00:00+14:59"),
        "deadline +15:00": with_(crit, deadline_timestamp="2099-01-01T00:00:00+15:00"),
        "deadline second 60": with_(crit, deadline_timestamp="2099-01-01T00:00:60Z"),
        "deadline lower-case z": with_(crit, deadline_timestamp="2099-01-01T00:00:00z"),
        "deadline space separator": with_(crit, deadline_timestamp="2099-01-01 00:00:00Z"),
        "deadline unix number": with_(crit, deadline_timestamp=4070908800),
        "deadline empty string": with_(crit, deadline_timestamp=""),
        "deadline past": with_(crit, deadline_timestamp="2001-01-01T00:00:00Z"),
        "deadline 7 fraction digits": with_(
            crit, deadline_timestamp="2099-01-01T00:00:00.1234567Z"
        ),
        "deadline Arabic digits": with_(crit, deadline_timestamp="٢٠٩٩-01-01T00:00:00Z"),
        "deadline on a no-deadline type": with_(b, deadline_timestamp=future()),
        "required deadline missing": with_(crit, deadline_timestamp=DROP),
        "batch type without batch_id": with_(batch, batch_id=None),
        "batch type with blank batch_id": with_(batch, batch_id="  "),
        "document is an array": Raw("[1]"),
        "document is a string": Raw('"x"'),
        "document is null": Raw("null"),
        "not JSON": Raw("{"),
        "duplicate keys, last valid": Raw(dumps(b)[:-1] + ',"teacher_id":"t2"}'),
        "duplicate keys, last bad": Raw(dumps(b)[:-1] + ',"teacher_id":""}'),
    }
    return {name: dumps(doc) for name, doc in cases.items()}


# -- hypothesis: documents that are mostly valid, with hostile parts ---------------

_CHARS = st.sampled_from(
    [*"ab-_.:@ 0", "\t", "\n", "\u00a0", "\u200b", "\u200f", "\u3000", "é", "\u0301",
                         "😀", "\u2028", "\x7f", "\x85", "\ufeff", "\x00", "\ud800", '"', "\\"]
)  # fmt: skip


def _ids(field: str) -> st.SearchStrategy[Any]:
    n = ID_MAX_CHARS[field]
    return st.one_of(
        st.text(_CHARS, min_size=0, max_size=6),
        st.integers(n - 2, n + 2).map(lambda k: "x" * k),
        st.integers(n - 2, n + 2).map(lambda k: "é" * k),
        st.sampled_from([None, 7, True, {"a": 1}, [], "ok-id", DROP]),
    )


_numbers = st.one_of(
    st.integers(-(10**16), 10**16),
    st.sampled_from(["1.50", "1e2", "1E-15", "1e-16", "-0.0", "0.000000000000001",
                     "123456789012345", "1234567890123456", "12345678.1234567",
                     "12345678.12345678", "1e400", "0e20", "5e-324"]).map(Raw),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Raw(repr(f))),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(lambda d: Raw(str(d))),
)  # fmt: skip

_json = st.recursive(
    st.one_of(st.none(), st.booleans(), _numbers, st.text(_CHARS, max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(_CHARS, max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)

_payloads = st.one_of(
    st.dictionaries(st.text(_CHARS, max_size=4), _json, max_size=4),
    st.integers(MAX_PAYLOAD_DEPTH - 3, MAX_PAYLOAD_DEPTH + 1).map(lambda d: {"d": nest(d - 1)}),
    st.integers(MAX_PAYLOAD_BYTES - 12, MAX_PAYLOAD_BYTES - 4).map(lambda n: {"s": "x" * n}),
    st.integers(MAX_PAYLOAD_BYTES // 2 - 8, MAX_PAYLOAD_BYTES // 2 - 2).map(
        lambda n: {"s": "é" * n}
    ),
    st.sampled_from([None, [], "x", 1, DROP]),
)

_deadlines = st.one_of(
    st.sampled_from([None, DROP, "", "2099-01-01T00:00:00Z", "2099-01-01T00:00:00+00",
                     "2099-02-29T00:00:00Z", "2096-02-29T12:30:00.5+05:30", "2199-12-31T23:59:59Z",
                     "2200-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2099-01-01T00:00:00+15:00",
                     "2099-01-01T00:00:00-14:59", 12345]),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2300, 1, 1)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + "Z"
    ),
)  # fmt: skip


@st.composite
def documents(draw: st.DrawFn) -> str:
    t = draw(st.sampled_from([*CATALOG, "nope", 5]))
    doc = base(t if isinstance(t, str) and t in CATALOG else "class_created")
    if t not in CATALOG:
        doc["notification_type"] = t
    # Change a few fields; each change is hostile or a boundary.
    for field in draw(st.sets(st.sampled_from(
            ["teacher_id", "correlation_id", "batch_id", "class_id", "payload", "deadline_timestamp",
             "priority", "category", "action_required", "extra"]), max_size=3)):  # fmt: skip
        if field in ID_MAX_CHARS:
            doc = with_(doc, **{field: draw(_ids(field))})
        elif field == "payload":
            doc = with_(doc, payload=draw(_payloads))
        elif field == "deadline_timestamp":
            doc = with_(doc, deadline_timestamp=draw(_deadlines))
        elif field == "extra":
            doc = with_(doc, **{draw(st.sampled_from(["x", "txid", "created_at"])): 1})
        else:
            doc = with_(doc, **{field: draw(st.sampled_from([None, DROP, "STANDARD", 1, True,
                                                              "standard", "class_management"]))})  # fmt: skip
    return dumps(doc)
