"""The rule set of a notification document, as one pure function.

:func:`check_document` takes the JSON document an outbox row holds (a ``dict``
as ``json.loads`` gives it, or with Python values such as enums and datetimes
when a service builds one) and returns every broken rule. The database trigger
(``sql/004_rules.sql``) applies the same rules with the same SQLSTATEs, reading
its limits from the generated ``sql/R__limits.sql``; a differential test proves
both accept and refuse the same documents.

Numbers are checked as written: a JSON reader that turns ``1.0000000000000001``
into the float ``1.0`` has lost what the rule looks at, so
:func:`parse_document` reads floats as :class:`decimal.Decimal`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from contracts.catalog import CATALOG, DeadlineRule, requires_batch_id, requires_class_id
from contracts.display import UNSAFE_CHARS, printable
from contracts.errors import (
    SQLSTATE_CATALOG_MISMATCH,
    SQLSTATE_DEADLINE,
    SQLSTATE_MALFORMED,
    SQLSTATE_MISSING_FIELD,
    SQLSTATE_PAYLOAD,
    SQLSTATE_UNKNOWN_TYPE,
    Violation,
)
from contracts.limits import (
    ALL_ID_MAX_CHARS,
    DEADLINE_PATTERN,
    DEADLINE_YEAR_MAX,
    DEADLINE_YEAR_MIN,
    DOCUMENT_KEYS,
    MAX_NUMBER_DIGITS,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    OPTIONAL_IDS,
    REQUIRED_IDS,
    WHITESPACE,
)

_FORBIDDEN = UNSAFE_CHARS  # what an id may not hold is what is escaped when shown
_SURROGATE_OR_NUL = re.compile("[\x00\ud800-\udfff]")
_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\]')
_WS = "".join(chr(c) for c in WHITESPACE)
_DEADLINE = re.compile(DEADLINE_PATTERN)
_KEYS = frozenset(DOCUMENT_KEYS)
_MAX_OFFSET = timedelta(hours=14, minutes=59)


class _Absent:
    """A key that is not in the document (unlike one whose value is null)."""


ABSENT = _Absent()


@dataclass(frozen=True)
class PayloadStats:
    """What the payload rules look at."""

    size: int  # UTF-8 bytes of the canonical compact JSON
    depth: int  # containers nested, the payload object counting as 1
    problem: str | None  # a value no JSON document in Postgres can hold, or a bad number
    has_float: bool  # a float was measured from its repr, not from its JSON text


def canonical_number(d: Decimal) -> str:
    """A finite number as Postgres writes it: plain decimal form, the scale as
    written (``1.50`` stays ``1.50``, ``1e2`` is ``100``), no sign on zero."""
    s = format(d, "f")
    return s.lstrip("-") if d.is_zero() else s


def number_digits(canonical: str) -> int:
    """Integer digits (leading zeros not counted) plus every fraction digit."""
    int_part, _, frac = canonical.lstrip("-").partition(".")
    return len(int_part.lstrip("0")) + len(frac)


def _number(value: int | float | Decimal) -> tuple[int, str | None]:
    """The canonical length of a number and the problem with it, if any."""
    if isinstance(value, int):
        if abs(value) >= 10**MAX_NUMBER_DIGITS:
            return 0, f"a number has more than {MAX_NUMBER_DIGITS} digits"
        return len(str(value)), None
    if isinstance(value, float):
        if not math.isfinite(value):
            return 0, "a number is not finite (NaN or infinity)"
        r = repr(value)
        if "e" not in r:  # plain form already (the common case): count it as written
            if number_digits(r) > MAX_NUMBER_DIGITS:
                return 0, f"a number has more than {MAX_NUMBER_DIGITS} digits written out; round it"
            return len(r) - (1 if value == 0 and r[0] == "-" else 0), None
        value = Decimal(r)
    if not value.is_finite():
        return 0, "a number is not finite (NaN or infinity)"
    _, digits, exp = value.as_tuple()
    assert isinstance(exp, int)
    too_many = f"a number has more than {MAX_NUMBER_DIGITS} digits written out; round it"
    # Guard before formatting: 1e-999999999 would be a billion digits long.
    if exp < -MAX_NUMBER_DIGITS or (not value.is_zero() and len(digits) + exp > MAX_NUMBER_DIGITS):
        return 0, too_many
    text = canonical_number(value)
    if number_digits(text) > MAX_NUMBER_DIGITS:
        return 0, too_many
    return len(text), None


def _string_size(s: str) -> int:
    """UTF-8 bytes of ``s`` as a JSON string; -1 if no JSON in Postgres can hold it."""
    if s.isascii():
        if _NEEDS_ESCAPE.search(s) is None:
            return len(s) + 2
        return -1 if "\x00" in s else len(encode_basestring(s))
    if _SURROGATE_OR_NUL.search(s):
        return -1
    if _NEEDS_ESCAPE.search(s) is None:
        return len(s.encode()) + 2
    return len(encode_basestring(s).encode())


_BAD_STRING = "a string holds NUL or a lone surrogate, which JSON in Postgres cannot hold"
_INT_LIMIT = 10**MAX_NUMBER_DIGITS


class _Bad(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def payload_stats(payload: Any, *, need_size: bool = True) -> PayloadStats:
    """Measure a payload (already known to be a dict); ``need_size=False`` when the
    caller knows it is within the size limit. The walk stops descending one
    level past the depth limit, so no payload can exhaust the stack."""
    acc = _Acc()
    try:
        size = _walk(payload, 1, acc, need_size)
    except _Bad as bad:
        return PayloadStats(0, acc.depth, bad.problem, acc.has_float)
    return PayloadStats(size, acc.depth, None, acc.has_float)


class _Acc:
    __slots__ = ("depth", "has_float")

    def __init__(self) -> None:
        self.depth = 0
        self.has_float = False


def _walk(v: Any, level: int, acc: _Acc, need_size: bool) -> int:
    """The canonical size of ``v``; this runs for every record the router reads,
    hence the dispatch on exact types first."""
    t = type(v)
    if t is str:
        n = _string_size(v)
        if n < 0:
            raise _Bad(_BAD_STRING)
        return n
    if t is dict:
        if level > acc.depth:
            acc.depth = level
            if level > MAX_PAYLOAD_DEPTH:
                return 0  # refused for its depth; what is deeper does not matter
        size = 1 + len(v) if v else 2
        for k, item in v.items():
            if type(k) is not str:
                raise _Bad("an object key is not a string")
            n = _string_size(k)
            if n < 0:
                raise _Bad(_BAD_STRING)
            size += n + 1 + _walk(item, level + 1, acc, need_size)
        return size
    if t is list or t is tuple:
        if level > acc.depth:
            acc.depth = level
            if level > MAX_PAYLOAD_DEPTH:
                return 0
        size = 1 + len(v) if v else 2
        for item in v:
            size += _walk(item, level + 1, acc, need_size)
        return size
    if t is int:
        if not -_INT_LIMIT < v < _INT_LIMIT:
            raise _Bad(f"a number has more than {MAX_NUMBER_DIGITS} digits")
        return len(str(v)) if need_size else 0
    if t is bool:
        return 4 if v else 5
    if v is None:
        return 4
    if isinstance(v, float | Decimal | int):
        acc.has_float = acc.has_float or isinstance(v, float)
        n, problem = _number(v)
        if problem:
            raise _Bad(problem)
        return n
    if isinstance(v, str):  # a str subclass, e.g. an enum member
        return _walk(str(v), level, acc, need_size)
    raise _Bad(f"a {type(v).__name__} is not a JSON value")


def _payload_violations(payload: Any, report: dict[str, Any] | None) -> list[Violation]:
    if payload is ABSENT:
        return []
    if not isinstance(payload, dict):
        return [Violation("payload", "must be a JSON object (a dict)", SQLSTATE_PAYLOAD)]
    # A reader of JSON text of N bytes may say so: the canonical form of a payload
    # is at most 18 x N (strings and punctuation never grow; a number of at most
    # 15 digits is at most 18 characters, "-0.000000000000001", and at least one
    # written), so a short enough text needs no size measurement.
    bound = report.get("text_bytes") if report is not None else None
    need_size = not (isinstance(bound, int) and bound * 18 <= MAX_PAYLOAD_BYTES)
    st = payload_stats(payload, need_size=need_size)
    if report is not None:
        report["has_float"] = st.has_float
    if st.problem:
        return [Violation("payload", st.problem, SQLSTATE_PAYLOAD)]
    if st.depth > MAX_PAYLOAD_DEPTH:
        return [Violation("payload", f"nests more than {MAX_PAYLOAD_DEPTH} objects or arrays "
                          "deep; flatten it", SQLSTATE_PAYLOAD)]  # fmt: skip
    if st.size > MAX_PAYLOAD_BYTES:
        return [Violation("payload", f"is {st.size} bytes encoded, more than {MAX_PAYLOAD_BYTES}; "
                          "send a reference (an id or URL) instead of the data",
                          SQLSTATE_PAYLOAD)]  # fmt: skip
    return []


def payload_violations(payload: Any) -> list[Violation]:
    """What is wrong with a payload (an object, bounded in depth, digits and size)."""
    return _payload_violations(payload, None)


def id_violations(field: str, value: Any, *, required: bool) -> list[Violation]:
    """What is wrong with an id field's value (also used for a token's ``sub``)."""
    if (type(value) is str and len(value) <= ALL_ID_MAX_CHARS[field]
            and _FORBIDDEN.search(value) is None and value.strip(_WS)):  # fmt: skip
        return []  # the common case, first: this runs for every id of every record
    if value is ABSENT or value is None:
        if required:
            return [Violation(field, "is required; pass it as a non-empty string",
                              SQLSTATE_MISSING_FIELD)]  # fmt: skip
        return []
    if not isinstance(value, str):
        return [Violation(field, f"must be a string, not {_json_type(value)}", SQLSTATE_MALFORMED)]
    out = []
    if not value.strip(_WS):
        out.append(Violation(field, "must not be empty or only whitespace", SQLSTATE_MISSING_FIELD))
    limit = ALL_ID_MAX_CHARS[field]
    if len(value) > limit:
        out.append(Violation(field, f"is {len(value)} characters, more than {limit}",
                             SQLSTATE_MALFORMED))  # fmt: skip
    if _FORBIDDEN.search(value):
        out.append(Violation(field, "holds a control, invisible or bidirectional-format "
                             "character; ids must be printable text", SQLSTATE_MALFORMED))  # fmt: skip
    return out


def _json_type(v: Any) -> str:
    if v is ABSENT:
        return "missing"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float | Decimal):
        return "a number"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list | tuple):
        return "an array"
    return f"a {type(v).__name__}"


def _text(v: Any) -> Any:
    """Enum members as their value (a service passes enums, JSON has strings)."""
    return v.value if isinstance(v, Enum) else v


def parse_deadline(value: Any) -> datetime | Violation:
    """A deadline as a timezone-aware datetime, or why it is not one."""
    if isinstance(value, datetime):
        off = value.utcoffset()
        if value.tzinfo is None or off is None:
            return Violation("deadline_timestamp", "is naive; give it a timezone "
                             "(for example datetime.now(UTC))", SQLSTATE_DEADLINE)  # fmt: skip
        if abs(off) > _MAX_OFFSET or off % timedelta(minutes=1):
            return Violation("deadline_timestamp", "has a UTC offset beyond ±14:59 or not in "
                             "whole minutes", SQLSTATE_DEADLINE)  # fmt: skip
        if not DEADLINE_YEAR_MIN <= value.year <= DEADLINE_YEAR_MAX:
            return _year_violation()
        return value
    if not isinstance(value, str):
        return Violation("deadline_timestamp", f"must be an RFC 3339 string, not "
                         f"{_json_type(value)}", SQLSTATE_DEADLINE)  # fmt: skip
    m = _DEADLINE.match(value)
    if m is None:
        return Violation("deadline_timestamp", f"{value[:40]!r} is not RFC 3339 with an offset; "
                         "write it like 2026-12-01T12:00:00Z or 2026-12-01T13:00:00+01:00",
                         SQLSTATE_DEADLINE)  # fmt: skip
    if not DEADLINE_YEAR_MIN <= int(m.group(1)) <= DEADLINE_YEAR_MAX:
        return _year_violation()
    try:
        return datetime.fromisoformat(value)  # the pattern admits only what it reads alike
    except ValueError:
        return Violation("deadline_timestamp", f"{value!r} is not a calendar date",
                         SQLSTATE_DEADLINE)  # fmt: skip


def _year_violation() -> Violation:
    return Violation("deadline_timestamp", f"must fall in the years {DEADLINE_YEAR_MIN}.."
                     f"{DEADLINE_YEAR_MAX}", SQLSTATE_DEADLINE)  # fmt: skip


class _TypeRule(NamedTuple):
    """What the catalog says of one type, as the document spells it."""

    priority: str
    category: str
    action_required: bool
    deadline: DeadlineRule
    needs: tuple[bool, bool]  # batch_id, class_id


def _needs(notification_type: str) -> tuple[bool, bool]:
    return requires_batch_id(notification_type), requires_class_id(notification_type)


# Read once from the catalog (check_document runs for every record the router reads).
_TYPE_RULES = {
    name: _TypeRule(e.priority.value, e.category.value, e.action_required, e.deadline,
                    _needs(name))
    for name, e in CATALOG.items()
}  # fmt: skip


def check_document(doc: Any, *, now: datetime | None = None,
                   report: dict[str, Any] | None = None) -> list[Violation]:  # fmt: skip
    """Every rule ``doc`` breaks; with ``now``, a deadline not after it breaks one too
    (the database checks that at insert time). ``report["has_float"]`` says
    whether a float was measured from its repr (see :func:`parse_document`), and
    ``report["deadline"]`` holds the deadline as parsed."""
    if not isinstance(doc, dict):
        return [Violation("document", "must be a JSON object holding the whole notification",
                          SQLSTATE_PAYLOAD)]  # fmt: skip
    out: list[Violation] = []
    if not _KEYS.issuperset(doc):  # set arithmetic first: this runs for every record
        extra = sorted(str(k) for k in doc if k not in _KEYS)
        out.append(Violation("document", f"has keys that are not notification fields: "
                             f"{', '.join(repr(k[:40]) for k in extra[:5])}", SQLSTATE_MALFORMED))  # fmt: skip
    get = doc.get
    n_type = _text(get("notification_type", ABSENT))
    rule = _TYPE_RULES.get(n_type) if isinstance(n_type, str) else None
    if rule is None:
        shown = repr(n_type[:80]) if isinstance(n_type, str) else _json_type(n_type)
        out.append(Violation("notification_type", f"unknown notification_type {shown}; use one "
                             f"of: {', '.join(sorted(CATALOG))}", SQLSTATE_UNKNOWN_TYPE))  # fmt: skip
    for f in REQUIRED_IDS:
        out += id_violations(f, get(f, ABSENT), required=True)
    deadline = get("deadline_timestamp", ABSENT)
    if rule is not None:
        for f, want in (("priority", rule.priority), ("category", rule.category)):
            got = _text(get(f, ABSENT))
            if got != want or not isinstance(got, str):
                out.append(_mismatch(n_type, f, got, want))
        action = get("action_required", False)
        if action is not rule.action_required:
            out.append(_mismatch(n_type, "action_required", action, rule.action_required))
        if deadline is ABSENT or deadline is None:
            if rule.deadline is DeadlineRule.REQUIRED:
                out.append(Violation("deadline_timestamp", f"{n_type} requires a deadline; pass "
                                     "a timezone-aware datetime", SQLSTATE_DEADLINE))  # fmt: skip
        elif rule.deadline is DeadlineRule.NONE:
            out.append(Violation("deadline_timestamp", f"{n_type} takes no deadline; leave it out",
                                 SQLSTATE_DEADLINE))  # fmt: skip
    if deadline is not ABSENT and deadline is not None:
        parsed = parse_deadline(deadline)
        if isinstance(parsed, Violation):
            out.append(parsed)
        elif report is not None:
            report["deadline"] = parsed
        if isinstance(parsed, datetime) and now is not None and parsed <= now:
            out.append(Violation("deadline_timestamp", f"{parsed.isoformat()} is already past; "
                                 "give a deadline in the future", SQLSTATE_DEADLINE))  # fmt: skip
    for f in OPTIONAL_IDS:
        out += id_violations(f, get(f, ABSENT), required=False)
    if isinstance(n_type, str):
        needs = rule.needs if rule is not None else _needs(n_type)
        for f, needed in zip(("batch_id", "class_id"), needs, strict=True):
            if needed and get(f) is None:
                out.append(Violation(f, f"is required for {n_type}; pass its id",
                                     SQLSTATE_MISSING_FIELD))  # fmt: skip
    out += _payload_violations(get("payload", ABSENT), report)
    return out


def _mismatch(notification_type: str, field: str, got: object, want: object) -> Violation:
    return Violation(
        field,
        f"{notification_type} has {field} {_show(want)} in the catalog, "
        f"not {_show(got)}; leave it out and let build_notification() fill it",
        SQLSTATE_CATALOG_MISMATCH,
    )


def _show(value: object) -> str:
    if value is ABSENT or value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, str):
        return repr(value)[:60]
    # The record's own text, in an error that reaches logs and terminals.
    shown = printable(value[:40].upper())
    return shown if len(value) <= 40 else shown + "..."


def _parse_int(text: str) -> int | Decimal:
    return Decimal(text) if len(text) > 18 else int(text)


def reject_json_constant(name: str) -> Any:
    """``parse_constant`` for ``json``: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


def parse_document(raw: bytes | str) -> tuple[Any, Violation | None]:
    """Parse JSON text exactly (floats as Decimal, no NaN, any depth or size of
    number without an exception escaping): the document, or why it is not JSON."""
    try:
        return json.loads(raw, parse_float=Decimal, parse_int=_parse_int,
                          parse_constant=reject_json_constant), None  # fmt: skip
    except RecursionError:
        return None, Violation("payload", f"nests more than {MAX_PAYLOAD_DEPTH} objects or "
                               "arrays deep; flatten it", SQLSTATE_PAYLOAD)  # fmt: skip
    except (ValueError, InvalidOperation, UnicodeDecodeError) as exc:
        return None, Violation("document", f"is not JSON: {str(exc)[:200]}", SQLSTATE_PAYLOAD)
