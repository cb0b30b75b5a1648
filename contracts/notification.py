"""``TeacherNotificationRequestedV1``: the one event the WebSocket layer ever sees."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from contracts.catalog import DeadlineRule, get_entry, requires_batch_id, requires_class_id
from contracts.errors import (
    SQLSTATE_CATALOG_MISMATCH,
    SQLSTATE_DEADLINE,
    SQLSTATE_MISSING_FIELD,
    SQLSTATE_PAYLOAD,
    InvalidNotificationError,
    Violation,
)
from contracts.taxonomy import NotificationPriority, WebSocketEventCategory

NOTIFICATION_TOPIC = "huleedu.notification.teacher.requested.v1"
DEAD_LETTER_TOPIC = f"{NOTIFICATION_TOPIC}.dlq"
MAX_PAYLOAD_BYTES = 64 * 1024


class TeacherNotificationRequestedV1(BaseModel):
    """A notification for exactly one teacher, as written to the outbox.

    Constructing one validates it against the catalog; a broken rule raises
    ``pydantic.ValidationError`` whose messages name the field and the fix.
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

    @model_validator(mode="after")
    def _check_rules(self, info: ValidationInfo) -> Self:
        # A reader that parsed a whole record of N bytes knows the payload is at
        # most N bytes encoded: it may pass {"encoded_size": N} to skip re-encoding.
        ctx = info.context if isinstance(info.context, dict) else {}
        bound = ctx.get("encoded_size")
        found = violations(self, payload_bound=bound if isinstance(bound, int) else None)
        if found:
            raise InvalidNotificationError(found)
        return self

    def to_json(self) -> str:
        """The compact JSON stored as the outbox row's payload."""
        return self.model_dump_json()


def violations(
    n: TeacherNotificationRequestedV1,
    *,
    now: datetime | None = None,
    payload_bound: int | None = None,
) -> list[Violation]:
    """Every rule ``n`` breaks; with ``now``, a past deadline breaks one too.

    Raises:
        UnknownNotificationTypeError: the type is not in the catalog.
    """
    entry = get_entry(n.notification_type)
    out: list[Violation] = []
    if not n.teacher_id.strip():
        out.append(
            Violation(
                "teacher_id", "must not be empty; pass the teacher's id", SQLSTATE_MISSING_FIELD
            )
        )
    if not n.correlation_id.strip():
        out.append(
            Violation(
                "correlation_id",
                "must not be empty; pass the id of the request or event that caused this",
                SQLSTATE_MISSING_FIELD,
            )
        )
    # Enum members and bools are singletons: identity is the cheap test of the
    # common case (this runs for every record the router reads).
    if n.priority is not entry.priority:
        out.append(_mismatch(n.notification_type, "priority", n.priority, entry.priority))
    if n.category is not entry.category:
        out.append(_mismatch(n.notification_type, "category", n.category, entry.category))
    if n.action_required is not entry.action_required:
        out.append(
            _mismatch(
                n.notification_type, "action_required", n.action_required, entry.action_required
            )
        )
    d = n.deadline_timestamp
    if d is None:
        if entry.deadline is DeadlineRule.REQUIRED:
            out.append(
                Violation(
                    "deadline_timestamp",
                    f"{n.notification_type} requires a deadline; pass a timezone-aware datetime",
                    SQLSTATE_DEADLINE,
                )
            )
    elif entry.deadline is DeadlineRule.NONE:
        out.append(
            Violation(
                "deadline_timestamp",
                f"{n.notification_type} takes no deadline; leave it out",
                SQLSTATE_DEADLINE,
            )
        )
    elif d.tzinfo is None or d.utcoffset() is None:
        out.append(
            Violation(
                "deadline_timestamp",
                "is naive; give it a timezone (for example datetime.now(UTC))",
                SQLSTATE_DEADLINE,
            )
        )
    elif now is not None and d <= now:
        out.append(
            Violation(
                "deadline_timestamp",
                f"{d.isoformat()} is already past; give a deadline in the future",
                SQLSTATE_DEADLINE,
            )
        )
    if requires_batch_id(n.notification_type) and not (n.batch_id or "").strip():
        out.append(
            Violation(
                "batch_id",
                f"is required for {n.notification_type}; pass the batch's id",
                SQLSTATE_MISSING_FIELD,
            )
        )
    if requires_class_id(n.notification_type) and not (n.class_id or "").strip():
        out.append(
            Violation(
                "class_id",
                f"is required for {n.notification_type}; pass the class's id",
                SQLSTATE_MISSING_FIELD,
            )
        )
    if payload_bound is not None and payload_bound <= MAX_PAYLOAD_BYTES:
        size = 0  # the whole encoded record is within the limit, so the payload is
    else:
        size = len(json.dumps(n.payload, separators=(",", ":"), default=str).encode())
    if size > MAX_PAYLOAD_BYTES:
        out.append(
            Violation(
                "payload",
                f"is {size} bytes encoded, more than {MAX_PAYLOAD_BYTES}; send a reference "
                "(an id or URL) instead of the data",
                SQLSTATE_PAYLOAD,
            )
        )
    return out


def _mismatch(notification_type: str, field: str, got: object, want: object) -> Violation:
    return Violation(
        field,
        f"{notification_type} has {field} {_show(want)} in the catalog, "
        f"not {_show(got)}; leave it out and let build_notification() fill it",
        SQLSTATE_CATALOG_MISMATCH,
    )


def _show(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).upper() if isinstance(value, NotificationPriority) else str(value)


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
    candidate = TeacherNotificationRequestedV1.model_construct(
        teacher_id=teacher_id,
        notification_type=notification_type,
        category=entry.category,
        priority=entry.priority,
        payload=payload,
        action_required=entry.action_required,
        deadline_timestamp=deadline_timestamp,
        correlation_id=correlation_id,
        batch_id=batch_id,
        class_id=class_id,
    )
    found = violations(candidate, now=now)
    if found:
        raise InvalidNotificationError(found)
    return TeacherNotificationRequestedV1.model_validate(candidate.model_dump())
