"""``TeacherNotificationRequestedV1``: the one event the WebSocket layer ever sees."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from contracts.catalog import get_entry
from contracts.errors import (
    SQLSTATE_MALFORMED,
    SQLSTATE_PAYLOAD,
    InvalidNotificationError,
    Violation,
)
from contracts.rules import check_document, parse_document, reject_json_constant
from contracts.taxonomy import NotificationPriority, WebSocketEventCategory

NOTIFICATION_TOPIC = "huleedu.notification.teacher.requested.v1"
DEAD_LETTER_TOPIC = f"{NOTIFICATION_TOPIC}.dlq"


class TeacherNotificationRequestedV1(BaseModel):
    """A notification for exactly one teacher, as written to the outbox.

    Constructing one checks every rule of :func:`contracts.rules.check_document`
    (the database trigger's rules); a broken rule raises ``pydantic.ValidationError``
    wrapping an :class:`InvalidNotificationError` whose violations name the field
    and the fix. To read JSON text use :func:`parse_notification`, which also
    sees a number's digits exactly.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher_id: str
    notification_type: str
    category: WebSocketEventCategory
    priority: NotificationPriority
    payload: dict[str, Any] = Field(default_factory=dict)
    action_required: bool = False
    deadline_timestamp: datetime | None = None
    correlation_id: str
    batch_id: str | None = None
    class_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _check_rules(cls, data: Any, info: ValidationInfo) -> Any:
        report = info.context if isinstance(info.context, dict) else {}
        report.pop("deadline", None)
        found = check_document(data, report=report)
        if found:
            raise InvalidNotificationError(found)
        parsed = report.get("deadline")
        if parsed is not None and not isinstance(data.get("deadline_timestamp"), datetime):
            # As the rule set read it, not pydantic's laxer datetime reader.
            data = {**data, "deadline_timestamp": parsed}
        return data

    def to_json(self) -> str:
        """The compact JSON stored as the outbox row's payload."""
        return self.model_dump_json()


def violations(
    n: TeacherNotificationRequestedV1, *, now: datetime | None = None
) -> list[Violation]:
    """Every rule ``n`` breaks; with ``now``, a past deadline breaks one too."""
    return check_document(n.model_dump(), now=now)


def _from_validation_error(exc: ValidationError) -> InvalidNotificationError | None:
    for e in exc.errors():
        err = e.get("ctx", {}).get("error")
        if isinstance(err, InvalidNotificationError):
            return err
    return None


_LONG_NUMBER = re.compile(rb"[0-9][eE]|[0-9.eE+-]{16,}")


def _digits_in_doubt(raw: bytes | str, report: dict[str, Any]) -> bool:
    """A float was measured from its repr, and some number in the text may be
    longer than its repr says: the digits as written must be checked. (Without
    an exponent and 16 characters in a row, no number has more than 15 digits
    written, and then the repr's verdict is the text's.)"""
    return bool(report.get("has_float")) and _LONG_NUMBER.search(
        raw if isinstance(raw, bytes) else raw.encode(errors="surrogatepass")) is not None  # fmt: skip


def _exact_violations(raw: bytes | str, now: datetime | None) -> list[Violation]:
    doc, bad = parse_document(raw)
    return [bad] if bad is not None else check_document(doc, now=now)


def parse_notification(raw: bytes | str, *, now: datetime | None = None
                       ) -> TeacherNotificationRequestedV1:  # fmt: skip
    """Read a notification from JSON text (an outbox row's payload, a Kafka
    record's value), applying every rule exactly as the database does.

    Raises:
        InvalidNotificationError: not JSON, or a rule is broken; never any other
            exception for any input text.
    """
    report: dict[str, Any] = {"text_bytes": len(raw)}
    try:
        n = TeacherNotificationRequestedV1.model_validate_json(raw, context=report)
    except ValidationError as exc:
        # Say exactly why, from the exact reading (the fast reader rounds floats
        # and stops at its own recursion limit).
        found = _exact_violations(raw, now)
        if not found:
            mine = _from_validation_error(exc)
            found = (
                list(mine.violations)
                if mine is not None
                else [Violation("document", exc.errors()[0]["msg"][:200], SQLSTATE_MALFORMED)]
            )
        raise InvalidNotificationError(found) from None
    if now is not None or _digits_in_doubt(raw, report):
        found = _exact_violations(raw, now)
        if found:
            raise InvalidNotificationError(found)
    return n


# One decoder for every call (json.loads with an option builds one each time).
_DECODER = json.JSONDecoder(parse_constant=reject_json_constant)


def read_document(raw: bytes | str, *, now: datetime | None = None
                  ) -> tuple[dict[str, Any], datetime | None]:  # fmt: skip
    """Check JSON text against every rule, exactly as :func:`parse_notification`
    does, without building the model: the document as ``json.loads`` reads it
    and its deadline as the rules parsed it. For a reader that needs only a few
    fields of each of many notifications (the router); the rules are the same
    function, so it accepts and refuses exactly what the database does.

    Raises:
        InvalidNotificationError: not JSON, or a rule is broken; never any other
            exception for any input text.
    """
    report: dict[str, Any] = {"text_bytes": len(raw)}
    try:
        # UTF-8 only, as the database stores it (json.loads would also take UTF-16).
        doc = _DECODER.decode(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, RecursionError):  # say exactly why, from the exact reading
        found = _exact_violations(raw, now)
        raise InvalidNotificationError(
            found or [Violation("document", "is not JSON in UTF-8", SQLSTATE_PAYLOAD)]
        ) from None
    found = check_document(doc, now=now, report=report)
    if not found and _digits_in_doubt(raw, report):
        found = _exact_violations(raw, now)
    if found:
        raise InvalidNotificationError(found)
    deadline = report.get("deadline")
    return doc, deadline if isinstance(deadline, datetime) else None


def build_notification(
    notification_type: str,
    teacher_id: str,
    payload: dict[str, Any],
    correlation_id: str,
    *,
    batch_id: str | None = None,
    class_id: str | None = None,
    deadline_timestamp: datetime | None = None,
    now: datetime | None = None,
) -> TeacherNotificationRequestedV1:
    """Build a notification, taking priority, category, action and the default
    deadline from the catalog, so a service only says what happened.

    Raises:
        UnknownNotificationTypeError: the type is not in the catalog.
        InvalidNotificationError: a rule is broken (each violation names the fix).
    """
    entry = get_entry(notification_type)
    now = now or datetime.now(UTC)
    if not isinstance(payload, dict):
        raise InvalidNotificationError(
            [Violation("payload", "must be a JSON object (a dict)", SQLSTATE_PAYLOAD)]
        )
    if deadline_timestamp is None and entry.default_deadline is not None:
        deadline_timestamp = now + entry.default_deadline
    doc: dict[str, Any] = {
        "teacher_id": teacher_id,
        "notification_type": notification_type,
        "category": entry.category,
        "priority": entry.priority,
        "payload": payload,
        "action_required": entry.action_required,
        "deadline_timestamp": deadline_timestamp,
        "correlation_id": correlation_id,
        "batch_id": batch_id,
        "class_id": class_id,
    }
    found = check_document(doc, now=now)
    if found:
        raise InvalidNotificationError(found)
    return TeacherNotificationRequestedV1.model_validate(doc)
