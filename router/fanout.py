"""Who gets what: the fan-out message format, the connection registry and the
hub that hands each message to its teacher's sessions (pure).

A fan-out message in, deliveries out. Nothing here touches a socket or Redis:
a connection is anything with a ``session`` (``router.session.Session``) and a
``flush()`` that sends what the session has to send.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

from contracts.protocol import POSITION_RE
from router.session import Session, acked_text, created_epoch, notification_text

log = logging.getLogger(__name__)

C = TypeVar("C", bound=Hashable)
_position = POSITION_RE.match


class FanoutMessage(NamedTuple):
    """One message from the fan-out channel (a tuple: one is built per record)."""

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
        if not (type(h[3]) is str and _position(h[3])):  # frames carry it as it is
            raise ValueError("a notification record's position is not a stream position")
        received = h[5] if len(h) == 6 and isinstance(h[5], int | float) else None
        out.append(
            FanoutMessage("n", str(h[1]), str(h[2]), h[3], str(h[4]) or None, bodies[b],
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

    def targets(self, teacher_id: str) -> tuple[C, ...]:
        return tuple(self._by_teacher.get(teacher_id, ()))

    def all(self) -> list[C]:
        return [c for conns in self._by_teacher.values() for c in conns]

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_teacher.values())


class Endpoint(Protocol):
    """A connection as the hub sees it."""

    session: Session

    def flush(self) -> None: ...

    def __hash__(self) -> int: ...


E = TypeVar("E", bound=Endpoint)


class Hub(Generic[E]):
    """This replica's side of the fan-out: each message to the sessions of its
    teacher, and nobody else's."""

    def __init__(self) -> None:
        self.registry: Registry[E] = Registry()

    def dispatch(self, msg: FanoutMessage) -> None:
        targets = self.registry.targets(msg.teacher_id)
        if not targets:
            return
        if msg.kind == "a":
            acked = (acked_text(msg.event_id), None, None)
            for c in targets:
                c.session.acked(acked)
                c.flush()
            return
        assert msg.position is not None and msg.notification is not None
        item = (
            notification_text(msg.event_id, msg.position, msg.created_at, msg.notification),
            created_epoch(msg.created_at),
            msg.received_at,
        )
        for c in targets:
            c.session.live(msg.position, msg.event_id, item)
            c.flush()

    def restored(self, teachers: Iterable[str] | None = None) -> None:
        """The fan-out subscription is back: every session (or every session of
        ``teachers``, the ones whose subscription was lost) catches up on what it
        missed. A defect serving one ends that one, never the others."""
        conns = (self.registry.all() if teachers is None
                 else [c for t in teachers for c in self.registry.targets(t)])  # fmt: skip
        for c in conns:
            try:
                c.session.subscription_restored()
            except Exception:
                log.exception("conn %s: catching up failed; closing it", c.session.id)
                c.session.internal_error()
            c.flush()
