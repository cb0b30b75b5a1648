"""A model of the router's store and fan-out, in memory, to drive
``router.session.Session`` in unit tests (pure; the real ones are tested
against Redis in tests/integration)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from router.auth import Verifier, mint
from router.fanout import FanoutMessage, Hub
from router.limits import TeacherBudgets
from router.session import (
    Ack,
    Admit,
    CountReplay,
    Limits,
    LoadCatchUp,
    LoadSync,
    Session,
    StoreRequest,
)
from router.store import HistoryEntry, PendingItem, Replay

SECRET = "unit-secret-0123456789abcdef0123456789"
VERIFIER = Verifier(SECRET, ("HS256",), leeway_s=10.0)
T0 = 1_900_000_000.0  # epoch seconds every unit test starts at


def token(teacher: str, *, ttl: float = 3600, now: float | None = None, key: str = SECRET) -> str:
    import time

    return mint(key, teacher, int(ttl), now=time.time() if now is None else now)


def body(teacher: str, n: int) -> str:
    return json.dumps({"teacher_id": teacher, "n": n})


@dataclass
class ModelStore:
    """History (a stream per teacher), pending items and a fan-out queue."""

    history: dict[str, list[HistoryEntry]] = field(default_factory=dict)
    pending: dict[str, dict[str, PendingItem]] = field(default_factory=dict)
    trimmed: dict[str, int] = field(default_factory=dict)  # entries dropped from the front
    inflight: list[FanoutMessage] = field(default_factory=list)
    subscribed: bool = True
    seq: int = 0

    def publish(self, teacher: str, *, rank: int = 0, action: bool = False) -> HistoryEntry:
        """Record a notification and announce it (as the ingest script does)."""
        self.seq += 1
        e = HistoryEntry(f"1000-{self.seq}", f"ev-{self.seq}", body(teacher, self.seq), None)
        self.history.setdefault(teacher, []).append(e)
        if action:
            self.pending.setdefault(teacher, {})[e.event_id] = PendingItem(
                e.event_id, e.position, rank, None, None, json.loads(e.notification)
            )
        if self.subscribed:
            self.inflight.append(FanoutMessage("n", teacher, e.event_id, e.position, "",
                                               e.notification, None))  # fmt: skip
        return e

    def trim(self, teacher: str, keep: int) -> None:
        entries = self.history.get(teacher, [])
        drop = max(0, len(entries) - keep)
        self.history[teacher] = entries[drop:]
        self.trimmed[teacher] = self.trimmed.get(teacher, 0) + drop

    def head(self, teacher: str) -> str | None:
        entries = self.history.get(teacher)
        return entries[-1].position if entries else None

    def replay(self, teacher: str, after: str | None) -> Replay:
        from contracts.protocol import position_key

        entries = self.history.get(teacher, [])
        head = self.head(teacher)
        if after is None:
            return Replay([], True, head)
        if head is None:
            recovered = after == "0-0"
        else:
            older = position_key(after) < position_key(entries[0].position)
            recovered = not (self.trimmed.get(teacher) and older and after != "0-0")
        kept = [e for e in entries if position_key(e.position) > position_key(after)]
        return Replay(kept, recovered, head)

    def pending_items(self, teacher: str, limit: int) -> list[PendingItem]:
        from contracts.protocol import position_key

        items = sorted(self.pending.get(teacher, {}).values(),
                       key=lambda p: (-p.rank, position_key(p.position)))  # fmt: skip
        return items[:limit]

    def ack(self, teacher: str, event_id: str) -> bool:
        if self.pending.get(teacher, {}).pop(event_id, None) is None:
            return False
        if self.subscribed:
            self.inflight.append(FanoutMessage("a", teacher, event_id))
        return True

    def answer(self, session: Session, req: StoreRequest, now: float) -> None:
        if isinstance(req, LoadSync):
            session.sync_loaded(req, self.pending_items(req.teacher_id, req.limit),
                                self.replay(req.teacher_id, req.resume), now)  # fmt: skip
        elif isinstance(req, LoadCatchUp):
            session.caught_up(req, self.replay(req.teacher_id, req.after))
        elif isinstance(req, CountReplay):
            n = (
                min(len(self.replay(req.teacher_id, req.after).entries), req.limit)
                if req.after
                else 0
            )
            session.replay_counted(req, n, now)
        elif isinstance(req, Ack):
            session.ack_done(req, self.ack(req.teacher_id, req.event_id))


@dataclass(eq=False)
class Client:
    """One connection as its driver and its client see it: the session, the
    store requests it made and not yet answered, and every frame it received."""

    session: Session
    hub: Hub[Client]
    asked: list[StoreRequest] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    registered: bool = False
    clock: float = T0  # the time of the last input, for the admission

    def flush(self) -> None:
        s = self.session
        self.frames.extend(json.loads(text) for text, _, _ in s.outgoing)
        s.outgoing.clear()
        while s.requests:
            req = s.requests.pop(0)
            if isinstance(req, Admit):
                if s.admitted(self.hub.registry.count(req.teacher_id), self.clock):
                    self.hub.registry.add(req.teacher_id, self)
                    self.registered = True
                self.flush()
            else:
                self.asked.append(req)
        if s.closing is not None and self.registered:
            assert s.teacher_id is not None
            self.hub.registry.remove(s.teacher_id, self)
            self.registered = False

    def send(self, frame: dict[str, Any] | str | bytes, now: float = T0) -> None:
        raw = frame if isinstance(frame, str | bytes) else json.dumps(frame)
        self.clock = now
        self.session.receive(raw, now)
        self.flush()

    def answer_one(self, store: ModelStore, now: float = T0) -> StoreRequest:
        req = self.asked.pop(0)
        store.answer(self.session, req, now)
        self.flush()
        return req

    def answer_all(self, store: ModelStore, now: float = T0) -> None:
        while self.asked:
            self.answer_one(store, now)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    def __hash__(self) -> int:
        return id(self)


def deliver(store: ModelStore, hub: Hub[Client]) -> None:
    """Hand every announced message to the hub, in order."""
    while store.inflight:
        hub.dispatch(store.inflight.pop(0))


def connect(
    hub: Hub[Client],
    teacher: str | None = "t1",
    *,
    limits: Limits | None = None,
    resume: str | None = None,
    header: str | None = None,
    first: dict[str, Any] | str | bytes | None = None,
    now: float = T0,
    verifier: Verifier = VERIFIER,
    replay_budgets: TeacherBudgets | None = None,
    frame_budgets: TeacherBudgets | None = None,
) -> Client:
    """A connection authenticated by header (default) or by a first frame;
    ``replay_budgets`` and ``frame_budgets`` shared with other connections as the
    server shares them (by default its own)."""
    if header is None and first is None and teacher is not None:
        header = "Bearer " + token(teacher)
    session = Session("c" + str(len(hub.registry) + 1), limits=limits or Limits(),
                      verify=verifier.verify, now=now, resume=resume, authorization=header,
                      replay_budgets=replay_budgets, frame_budgets=frame_budgets)  # fmt: skip
    client = Client(session, hub, clock=now)
    client.flush()
    if first is not None:
        client.send(first, now)
    return client
