"""Write a notification into the outbox in the caller's own transaction.

These functions only execute an ``INSERT`` on the cursor they are given; they
never commit, so the notification commits or rolls back with the caller's
domain change. The row is validated again by the database trigger.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from contracts.errors import InvalidNotificationError
from contracts.notification import TeacherNotificationRequestedV1, violations

INSERT_SQL = (
    "INSERT INTO outbox.teacher_notifications (id, aggregateid, type, payload) "
    "VALUES (%s, %s, %s, %s::jsonb)"
)


class SyncCursor(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


class AsyncCursor(Protocol):
    async def execute(self, query: Any, params: Any = ..., /) -> Any: ...


def _row(
    notification: TeacherNotificationRequestedV1, event_id: uuid.UUID | None
) -> tuple[str, str, str, str]:
    found = violations(notification, now=datetime.now(UTC))
    if found:
        raise InvalidNotificationError(found)
    eid = event_id or uuid.uuid4()
    return (
        str(eid),
        notification.teacher_id,
        notification.notification_type,
        notification.to_json(),
    )


def enqueue(
    cursor: SyncCursor,
    notification: TeacherNotificationRequestedV1,
    *,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert ``notification`` through a psycopg (sync) cursor; return its event id.

    Raises:
        InvalidNotificationError: the deadline is already past (other rules were
            checked when the model was built).
        psycopg.Error: from the database, with SQLSTATE ``OB001``..``OB005`` when
            the trigger rejects the row.
    """
    row = _row(notification, event_id)
    cursor.execute(INSERT_SQL, row)
    return uuid.UUID(row[0])


async def enqueue_async(
    cursor: AsyncCursor,
    notification: TeacherNotificationRequestedV1,
    *,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """The async twin of :func:`enqueue`, for psycopg ``AsyncCursor``."""
    row = _row(notification, event_id)
    await cursor.execute(INSERT_SQL, row)
    return uuid.UUID(row[0])
