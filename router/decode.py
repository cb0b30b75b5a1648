"""Turn a raw Kafka record into a routable notification, or say why not (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from contracts.catalog import CATALOG
from contracts.errors import SQLSTATE_UNKNOWN_TYPE, InvalidNotificationError
from contracts.limits import MAX_RECORD_BYTES
from contracts.notification import read_document
from router.errors import PoisonMessageError

_EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# The `created_at` header is the outbox row's commit-side timestamp, which
# Debezium writes as ISO 8601 (about 30 characters); anything else is dropped.
CREATED_AT_MAX_CHARS = 64
Headers = Sequence[tuple[str, str | bytes | None]] | dict[str, str | bytes | None]


class Routable(NamedTuple):
    """A validated notification, ready for the store (a tuple: cheap to build)."""

    event_id: str
    teacher_id: str
    notification_json: str  # the record's JSON text as validated (no raw newline)
    created_at: str | None
    action_required: bool
    priority_rank: int
    deadline: str | None


def header_map(headers: Headers | None) -> dict[str, str | bytes]:
    """Header name -> its first non-null value."""
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, dict) else headers
    return {k: v for k, v in reversed(list(items)) if v is not None}


def _id_and_created(headers: Headers | None) -> tuple[str | bytes | None, str | bytes | None]:
    """The first non-null ``id`` and ``created_at`` header values (what
    :func:`header_map` would give for those two, without building it: this runs
    for every record)."""
    eid = created = None
    if headers:
        for k, v in headers.items() if isinstance(headers, dict) else headers:
            if v is None:
                continue
            if k == "id":
                if eid is None:
                    eid = v
            elif k == "created_at" and created is None:
                created = v
    return eid, created


def header_text(v: str | bytes | None) -> str | None:
    """A header value as text (None if absent or not UTF-8)."""
    if v is None or isinstance(v, str):
        return v
    try:
        return v.decode()
    except UnicodeDecodeError:
        return None


def created_text(v: str | bytes | None) -> str | None:
    """The ``created_at`` header as frames carry it: an ISO 8601 timestamp of at
    most CREATED_AT_MAX_CHARS, else None. It is metadata: a record whose header
    is missing or garbled is still delivered, without it (a browser given a
    text it cannot read as a date would fail to show the notification)."""
    text = header_text(v)
    if text is None or len(text) > CREATED_AT_MAX_CHARS:
        return None
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return None
    return text


def _routable(doc: dict[str, Any], deadline: datetime | None, event_id: str, text: str,
              created_at: str | None) -> Routable:  # fmt: skip
    # The rules passed: the type is in the catalog, the priority is its priority.
    rank = CATALOG[doc["notification_type"]].priority.rank
    # Positional: this runs for every record.
    return Routable(event_id, doc["teacher_id"], text, created_at,
                    doc.get("action_required") is True, rank,
                    deadline.isoformat() if deadline else None)  # fmt: skip


def decode(value: bytes | None, headers: Headers | None) -> Routable:
    """Validate one record with the contract's rules (the database's rules).

    Never raises anything but :class:`PoisonMessageError`, whatever the bytes.

    Raises:
        PoisonMessageError: ``kind`` is ``too_large``, ``invalid_json``,
            ``unknown_type``, ``schema`` (a broken rule), ``missing_id`` or
            ``internal`` (an error nobody foresaw; the record is kept in the DLQ).
    """
    try:
        return _decode(value, headers)
    except PoisonMessageError:
        raise
    except Exception as exc:  # a defect, not the record's fault alone: keep it, move on
        raise PoisonMessageError("internal", f"{type(exc).__name__}: {str(exc)[:500]}") from None


def _decode(value: bytes | None, headers: Headers | None) -> Routable:
    if value is None:
        raise PoisonMessageError("invalid_json", "the record has no value (a tombstone?)")
    if len(value) > MAX_RECORD_BYTES:
        raise PoisonMessageError("too_large", f"the record is {len(value)} bytes, more than "
                                 f"{MAX_RECORD_BYTES}; no row the database accepts is that large")  # fmt: skip
    raw_id, raw_created = _id_and_created(headers)
    event_id = header_text(raw_id)
    if not event_id or not _EVENT_ID.match(event_id):
        raise PoisonMessageError("missing_id", "no usable event id in the `id` header")
    if value[:1] == b'"':
        # A connector configured with JSON expansion and a JSON converter sends
        # the document as a JSON string.
        try:
            inner = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise PoisonMessageError("invalid_json", str(exc)[:500]) from None
        if not isinstance(inner, str):
            raise PoisonMessageError("schema", "expected a JSON object")
        value = inner.encode(errors="surrogatepass")
    try:
        doc, deadline = read_document(value)
    except InvalidNotificationError as exc:
        codes = {v.sqlstate for v in exc.violations}
        kind = ("unknown_type" if SQLSTATE_UNKNOWN_TYPE in codes
                else "invalid_json" if any(v.field == "document" and "not JSON" in v.message
                                          for v in exc.violations)
                else "schema")  # fmt: skip
        raise PoisonMessageError(kind, str(exc)[:1000]) from None
    # Valid JSON holds raw newlines only as whitespace; the fan-out framing
    # relies on there being none, so they become spaces.
    text = value.decode()
    if "\n" in text:
        text = text.replace("\n", " ")
    return _routable(doc, deadline, event_id, text, created_text(raw_created))
