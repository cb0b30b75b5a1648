"""One authenticated WebSocket connection: its bounded send queue and sync state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from contracts.protocol import CloseCode, NotificationFrame
from router.fanout import SyncState

# (frame text, the outbox row's created_at and the Kafka receipt as epoch
# seconds; None for frames without latency: welcome, replayed, pending, errors)
Outgoing = tuple[str, float | None, float | None]
# Writes a frame to the socket at once if it can without waiting; False if not.
DirectWrite = Callable[[Outgoing], bool]


def created_epoch(created_at: str | None) -> float | None:
    if not created_at:
        return None
    try:
        return datetime.fromisoformat(created_at).timestamp()
    except ValueError:
        return None


def notification_text(
    event_id: str,
    position: str,
    created_at: str | None,
    notification: dict[str, Any] | str,
    *,
    pending: bool = False,
    replayed: bool = False,
) -> str:
    """The JSON text of a notification frame (built directly: this is the hot path)."""
    body = notification if isinstance(notification, str) else json.dumps(notification)
    return (
        '{"type":"notification","id":' + json.dumps(event_id)
        + ',"position":"' + position + '","created_at":' + json.dumps(created_at)
        + ',"pending":' + ("true" if pending else "false")
        + ',"replayed":' + ("true" if replayed else "false")
        + ',"notification":' + body + "}"
    )  # fmt: skip


SLOW_CLIENT = "client too slow; reconnect with resume"

# Keep the hand-built frame in step with the model (checked by a unit test).
FRAME_FIELDS = tuple(NotificationFrame.model_fields)


class Session:
    """State of one connection; the handler owns its tasks."""

    def __init__(self, connection_id: str, teacher_id: str, *, queue_max: int,
                 direct: DirectWrite | None = None) -> None:  # fmt: skip
        self.id = connection_id
        self.teacher_id = teacher_id
        self.direct = direct
        self.queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=queue_max)
        self.sync = SyncState()
        # Set when the fan-out subscription came back during this connection's
        # first sync: that sync catches up again once it is done.
        self.resync_wanted = False
        # Set (with a close code and reason) to end the connection from outside.
        self.ended: tuple[int, str] | None = None
        self.end = asyncio.Event()

    def offer(self, item: Outgoing) -> bool:
        """Send a frame without waiting: straight to the socket when nothing is queued
        before it and the socket takes it, else through the bounded queue; on
        overflow end the session with 1013."""
        if self.ended is not None:
            return False
        # Only with an empty queue, so frames keep their order.
        if self.direct is not None and self.queue.empty() and self.direct(item):
            return True
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.end_with(CloseCode.TRY_AGAIN_LATER, SLOW_CLIENT)
            return False
        return True

    def end_with(self, code: int, reason: str) -> None:
        if self.ended is None:
            self.ended = (code, reason)
            self.end.set()

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Session) and other.id == self.id
