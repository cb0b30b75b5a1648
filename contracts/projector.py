"""Projectors: map a service's domain event to a teacher notification.

A service calls its projector right after writing its domain change, on the same
cursor, so both commit together::

    created = ClassCreated(class_id="c1", owner="t1", name="7B")
    cur.execute("INSERT INTO classes ...")
    class_created.emit(cur, created)      # same transaction
    conn.commit()
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from contracts.notification import TeacherNotificationRequestedV1, build_notification
from contracts.outbox import AsyncCursor, SyncCursor, enqueue, enqueue_async

E = TypeVar("E")


@dataclass(frozen=True)
class Projector(Generic[E]):
    """How one kind of domain event becomes one notification type.

    ``teacher_id`` resolves the recipient: read it off the event, or look it up
    (for example a callable that queries the service's own tables).
    """

    notification_type: str
    teacher_id: Callable[[E], str]
    payload: Callable[[E], dict[str, Any]]
    correlation_id: Callable[[E], str]
    batch_id: Callable[[E], str | None] | None = None
    class_id: Callable[[E], str | None] | None = None
    deadline: Callable[[E], datetime | None] | None = None

    def project(self, event: E) -> TeacherNotificationRequestedV1:
        """The notification for ``event``.

        Raises:
            ContractError: the event maps to an invalid notification.
        """
        return build_notification(
            self.notification_type,
            self.teacher_id(event),
            self.payload(event),
            self.correlation_id(event),
            batch_id=self.batch_id(event) if self.batch_id else None,
            class_id=self.class_id(event) if self.class_id else None,
            deadline_timestamp=self.deadline(event) if self.deadline else None,
        )

    def emit(self, cursor: SyncCursor, event: E) -> uuid.UUID:
        """Project ``event`` and enqueue it on ``cursor``; return the event id."""
        return enqueue(cursor, self.project(event))

    async def emit_async(self, cursor: AsyncCursor, event: E) -> uuid.UUID:
        return await enqueue_async(cursor, self.project(event))
