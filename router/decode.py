"""Turn a raw Kafka record into a routable notification, or say why not (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import NamedTuple

from pydantic import ValidationError

from contracts.errors import ContractError, UnknownNotificationTypeError
from contracts.notification import TeacherNotificationRequestedV1
from router.errors import PoisonMessageError

_EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
Headers = Sequence[tuple[str, str | bytes | None]] | dict[str, str | bytes | None]


class Routable(NamedTuple):
    """A validated notification, ready for the store (a tuple: cheap to build)."""

    event_id: str
    teacher_id: str
    notification_json: str  # compact, re-serialized from the validated model
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


def header_text(v: str | bytes | None) -> str | None:
    """A header value as text (None if absent or not UTF-8)."""
    if v is None or isinstance(v, str):
        return v
    try:
        return v.decode()
    except UnicodeDecodeError:
        return None


def _routable(n: TeacherNotificationRequestedV1, event_id: str, text: str | None,
              created_at: str | None) -> Routable:  # fmt: skip
    deadline = n.deadline_timestamp.isoformat() if n.deadline_timestamp else None
    # Positional: this runs for every record.
    return Routable(event_id, n.teacher_id, text if text is not None else n.model_dump_json(),
                    created_at, n.action_required, n.priority.rank, deadline)  # fmt: skip


def _fast(value: bytes, headers: dict[str, str | bytes]) -> Routable | None:
    """The common case in one step: a valid JSON object and an ``id`` header.

    The validated text is passed on as it is when it holds no raw newline (the
    fan-out framing relies on that); ``None`` sends the record down the slow
    path, which says exactly what is wrong.
    """
    event_id = header_text(headers.get("id"))
    if not event_id or not _EVENT_ID.match(event_id):
        return None
    try:
        n = TeacherNotificationRequestedV1.model_validate_json(
            value, context={"encoded_size": len(value)}
        )
    except (ValidationError, ValueError):
        return None
    text = value.decode() if b"\n" not in value else None
    return _routable(n, event_id, text, header_text(headers.get("created_at")))


def decode(value: bytes | None, headers: Headers | None) -> Routable:
    """Validate one record.

    Raises:
        PoisonMessageError: ``kind`` is ``invalid_json``, ``schema`` (wrong shape or
            a broken catalog rule), ``unknown_type`` or ``missing_id``.
    """
    if value is None:
        raise PoisonMessageError("invalid_json", "the record has no value (a tombstone?)")
    hmap = header_map(headers)
    fast = _fast(value, hmap)
    if fast is not None:
        return fast
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoisonMessageError("invalid_json", str(exc)) from None
    # A connector without JSON expansion sends the payload as a JSON string.
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise PoisonMessageError("invalid_json", f"string payload: {exc}") from None
    if not isinstance(data, dict):
        raise PoisonMessageError("schema", f"expected a JSON object, got {type(data).__name__}")
    try:
        n = TeacherNotificationRequestedV1.model_validate(data)
    except ContractError as exc:  # unknown type raised before field validation
        raise PoisonMessageError("unknown_type", str(exc)) from None
    except ValidationError as exc:
        text = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors()
        )
        unknown = any(
            isinstance(e.get("ctx", {}).get("error"), UnknownNotificationTypeError)
            for e in exc.errors()
        )
        kind = "unknown_type" if unknown else "schema"
        raise PoisonMessageError(kind, text[:1000]) from None
    event_id = header_text(hmap.get("id")) or str(data.get("event_id") or "")
    if not _EVENT_ID.match(event_id):
        raise PoisonMessageError("missing_id", "no usable event id in the `id` header or payload")
    return _routable(n, event_id, None, header_text(hmap.get("created_at")))
