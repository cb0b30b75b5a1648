"""Projectors: map a service's domain event to a teacher notification.

The canonical write path: the service writes its domain change, publishes the
domain event through the outbox and, in the same call, hands the event to its
notification projectors (no Kafka round trip, never consuming its own events
back), which decide whether a teacher is told. Everything commits together or
not at all::

    created = ClassCreated(class_id="c1", owner="t1", name="7B")
    cur.execute("INSERT INTO classes ...")
    CLASS_CREATED.publish(cur, created)   # the domain event + 0..n notifications
    conn.commit()

A projector alone (``class_created.emit(cur, created)``) writes only the
notification.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from contracts.events import publish_event, publish_event_async, topic_violations
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
    # Whether this event tells the teacher anything (default: always).
    when: Callable[[E], bool] | None = None

    def applies(self, event: E) -> bool:
        return self.when is None or self.when(event)

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


@dataclass(frozen=True)
class Published:
    """What one :meth:`DomainEvent.publish` wrote."""

    event_id: uuid.UUID
    notification_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class DomainEvent(Generic[E]):
    """How a service's event object becomes a domain event on its topic, and
    which projectors turn it into teacher notifications."""

    topic: str
    event_type: str
    key: Callable[[E], str]
    data: Callable[[E], dict[str, Any]]
    correlation_id: Callable[[E], str]
    projectors: tuple[Projector[E], ...] = field(default=())

    def __post_init__(self) -> None:
        problems = topic_violations(self.topic)
        if problems:
            raise ValueError(str(problems[0]))

    def _notifications(self, event: E) -> list[TeacherNotificationRequestedV1]:
        # All projected before anything is written: a bad one raises first.
        return [p.project(event) for p in self.projectors if p.applies(event)]

    def publish(self, cursor: SyncCursor, event: E) -> Published:
        """Write the domain event and its notifications on ``cursor`` (the
        caller's transaction; nothing is committed here).

        Raises:
            ContractError: the event or a notification breaks a rule.
            psycopg.Error: from the database (SQLSTATE ``OB001``..``OB007``).
        """
        notes = self._notifications(event)
        eid = publish_event(cursor, self.topic, self.key(event), self.event_type,
                            self.data(event), self.correlation_id(event))  # fmt: skip
        return Published(eid, tuple(enqueue(cursor, n) for n in notes))

    async def publish_async(self, cursor: AsyncCursor, event: E) -> Published:
        """The async twin of :meth:`publish`."""
        notes = self._notifications(event)
        eid = await publish_event_async(cursor, self.topic, self.key(event), self.event_type,
                                        self.data(event), self.correlation_id(event))  # fmt: skip
        return Published(eid, tuple([await enqueue_async(cursor, n) for n in notes]))
