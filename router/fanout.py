"""Who gets what: the connection registry and the replay/live merge (pure).

A fan-out message in, deliveries out. Nothing here touches a socket or Redis.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from contracts.protocol import position_key

C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True)
class FanoutMessage:
    """One message from the fan-out channel."""

    kind: str  # "n" notification, "a" ack
    teacher_id: str
    event_id: str
    position: str | None = None
    created_at: str | None = None
    notification: str | None = None  # the notification's JSON text, untouched
    received_at: float | None = None  # when the ingesting replica read it from Kafka


def parse_fanout(raw: bytes | str) -> list[FanoutMessage]:
    """Parse a channel message: a first line with a JSON array of record headers
    (``["n", teacher, event id, position, created_at, received_at]`` or ``["a",
    teacher, event id]``), then one line per ``"n"`` record, in order, with the
    notification's JSON, which is passed on without parsing. One message holds a
    whole batch, in order.

    Raises:
        ValueError: not a fan-out message of ours.
    """
    text = raw.decode() if isinstance(raw, bytes) else raw
    head, _, rest = text.partition("\n")
    heads = json.loads(head)
    if not isinstance(heads, list) or not heads:
        raise ValueError("not a fan-out message")
    bodies = rest.split("\n") if rest else []
    out: list[FanoutMessage] = []
    b = 0
    for h in heads:
        if not isinstance(h, list) or not h or h[0] not in ("n", "a"):
            raise ValueError("not a fan-out message")
        if h[0] == "a":
            if len(h) != 3:
                raise ValueError("malformed ack record")
            out.append(FanoutMessage("a", str(h[1]), str(h[2])))
            continue
        if len(h) not in (5, 6) or b >= len(bodies) or not bodies[b]:
            raise ValueError("malformed notification record")
        received = h[5] if len(h) == 6 and isinstance(h[5], int | float) else None
        out.append(
            FanoutMessage("n", str(h[1]), str(h[2]), str(h[3]), str(h[4]) or None, bodies[b],
                          received)
        )  # fmt: skip
        b += 1
    if b != len(bodies):
        raise ValueError("notification lines do not match the headers")
    return out


@dataclass
class Registry(Generic[C]):
    """Connections by teacher. A connection is only ever registered under the
    teacher its token names, so a message for teacher A reaches A's connections
    and nobody else's."""

    _by_teacher: dict[str, set[C]] = field(default_factory=dict)

    def add(self, teacher_id: str, conn: C) -> None:
        self._by_teacher.setdefault(teacher_id, set()).add(conn)

    def remove(self, teacher_id: str, conn: C) -> None:
        conns = self._by_teacher.get(teacher_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_teacher[teacher_id]

    def count(self, teacher_id: str) -> int:
        return len(self._by_teacher.get(teacher_id, ()))

    def targets(self, teacher_id: str) -> Iterable[C]:
        return tuple(self._by_teacher.get(teacher_id, ()))

    def all(self) -> list[C]:
        return [c for conns in self._by_teacher.values() for c in conns]

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_teacher.values())


class SyncState:
    """Merges replayed history and live messages for one connection, with no gap
    and no duplicate.

    The connection starts buffering live messages *before* it reads history
    (``begin``), so nothing published during the read is missed; after the
    replay (``finish``) the buffered live messages newer than the last replayed
    position are released and the connection is live. Every position goes out
    at most once, in increasing order.
    """

    def __init__(self) -> None:
        self.syncing = False
        self.last: tuple[int, int] | None = None
        self._buffer: list[tuple[str, str, Any]] = []
        self.sent_ids: set[str] = set()

    def begin(self, from_position: str | None = None) -> None:
        """Start buffering live messages; with ``from_position``, everything after
        it is to be (re)sent."""
        self.syncing = True
        self._buffer.clear()
        self.sent_ids.clear()
        if from_position is not None:
            self.last = position_key(from_position)

    def hold(self) -> None:
        """Buffer live messages again for a catch-up after a lost subscription,
        keeping what was sent: only what is newer than the last position sent
        goes out, so nothing is sent twice."""
        self.syncing = True

    def _fresh(self, position: str) -> bool:
        key = position_key(position)
        if self.last is not None and key <= self.last:
            return False
        self.last = key
        return True

    def live(self, position: str, event_id: str, item: Any) -> list[Any]:
        """A live message; what to send now (nothing while syncing)."""
        if self.syncing:
            self._buffer.append((position, event_id, item))
            return []
        return [item] if self._accept(position, event_id) else []

    def replayed(self, position: str, event_id: str) -> bool:
        """Whether a history entry should be sent."""
        return self._accept(position, event_id)

    def _accept(self, position: str, event_id: str) -> bool:
        fresh = self._fresh(position)
        return fresh and event_id not in self.sent_ids

    def mark_sent(self, event_id: str) -> None:
        """A pending item was sent up front: skip it when it shows up again."""
        self.sent_ids.add(event_id)

    def skip_to(self, position: str | None) -> None:
        """No replay asked for: the stream starts after ``position`` (the head)."""
        if position is not None:
            key = position_key(position)
            if self.last is None or key > self.last:
                self.last = key

    def finish(self) -> list[Any]:
        """End of replay: the buffered live items not yet covered, in order."""
        self.syncing = False
        buffered = sorted(self._buffer, key=lambda b: position_key(b[0]))
        self._buffer.clear()
        return [item for position, event_id, item in buffered if self._accept(position, event_id)]

    @property
    def position(self) -> str | None:
        return f"{self.last[0]}-{self.last[1]}" if self.last else None
