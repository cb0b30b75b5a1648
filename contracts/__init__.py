"""Contracts shared by services, the relay and the router: the notification model,
its catalog, the outbox writer API and the WebSocket wire protocol.

Pure pydantic; imports nothing from ``relay`` or ``router``.

Error tree::

    ContractError
    ├── UnknownNotificationTypeError   type not in the catalog (lists the known ones)
    └── InvalidNotificationError       one or more rule violations (field + fix each)
        └── InvalidEventError          the same, for a domain event (contracts.events)
"""

from contracts.catalog import CATALOG, CatalogEntry, DeadlineRule, get_entry
from contracts.errors import (
    ContractError,
    InvalidEventError,
    InvalidNotificationError,
    UnknownNotificationTypeError,
)
from contracts.events import EVENT_TOPICS, EventEnvelope, publish_event, publish_event_async
from contracts.notification import (
    DEAD_LETTER_TOPIC,
    NOTIFICATION_TOPIC,
    TeacherNotificationRequestedV1,
    build_notification,
)
from contracts.outbox import enqueue, enqueue_async
from contracts.taxonomy import NotificationPriority, WebSocketEventCategory

__all__ = [
    "CATALOG",
    "DEAD_LETTER_TOPIC",
    "EVENT_TOPICS",
    "NOTIFICATION_TOPIC",
    "CatalogEntry",
    "ContractError",
    "DeadlineRule",
    "EventEnvelope",
    "InvalidEventError",
    "InvalidNotificationError",
    "NotificationPriority",
    "TeacherNotificationRequestedV1",
    "UnknownNotificationTypeError",
    "WebSocketEventCategory",
    "build_notification",
    "enqueue",
    "enqueue_async",
    "get_entry",
    "publish_event",
    "publish_event_async",
]
