"""Random interleavings of everything a session meets (connects with and without
resume, notifications and acks announced late, store answers in any order
between connections, a lost and restored fan-out subscription, mid-session
resumes) against the invariants of docs/protocol.md:

- a connection receives nothing of another teacher;
- within one sync (from the connect or an accepted ``resume`` to the next): no
  notification twice, live and replayed positions in commit order, at most one
  ``replay_done``, pending items only before it;
- once everything announced is delivered and every request answered: no gap
  (each notification after the sync's starting point was received).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from contracts.protocol import position_key
from router.fanout import Hub
from router.session import CountReplay, Phase
from tests.unit.protocol_model import T0, Client, ModelStore, connect

TEACHERS = ("t1", "t2")


@dataclass
class Sync:
    """One sync of a connection: where its frames start and what it must cover."""

    first_frame: int
    after: str | None  # the resume position; None: from the connect on
    seq_at_start: int = 0  # the store's sequence number when it began
    lost_during: bool = False  # the fan-out subscription was lost while it ran


@dataclass(eq=False)
class Conn:
    client: Client
    teacher: str
    syncs: list[Sync] = field(default_factory=list)
    gone: bool = False


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = ModelStore()
        self.hub: Hub[Client] = Hub()
        self.conns: list[Conn] = []
        self.now = T0
        self.lost = False

    # -- helpers -------------------------------------------------------------

    def _tick(self) -> float:
        self.now += 0.5
        return self.now

    def _live(self) -> list[Conn]:
        return [c for c in self.conns if not c.gone and c.client.session.phase is Phase.OPEN]

    def _positions(self, teacher: str) -> list[str]:
        return ["0-0"] + [e.position for e in self.store.history.get(teacher, [])]

    def _answer(self, conn: Conn) -> None:
        client = conn.client
        req = client.asked.pop(0)
        if isinstance(req, CountReplay):
            n = (min(len(self.store.replay(req.teacher_id, req.after).entries), req.limit)
                 if req.after else 0)  # fmt: skip
            if client.session.replay_counted(req, n, self._tick()):
                conn.syncs.append(Sync(len(client.frames), req.after, self.store.seq, self.lost))
        else:
            self.store.answer(client.session, req, self._tick())
        client.flush()

    # -- rules ---------------------------------------------------------------

    @precondition(lambda self: len(self.conns) < 6)
    @rule(teacher=st.sampled_from(TEACHERS), data=st.data())
    def connect(self, teacher: str, data: st.DataObject) -> None:
        resume = data.draw(st.none() | st.sampled_from(self._positions(teacher)), "resume")
        client = connect(self.hub, teacher, resume=resume, now=self._tick())
        conn = Conn(client, teacher)
        if client.registered:
            conn.syncs.append(Sync(1, resume, self.store.seq, self.lost))  # after the welcome
        self.conns.append(conn)

    @rule(teacher=st.sampled_from((*TEACHERS, "t3")), action=st.booleans(),
          rank=st.integers(0, 4))  # fmt: skip
    def publish(self, teacher: str, action: bool, rank: int) -> None:
        self.store.publish(teacher, action=action, rank=rank)

    @precondition(lambda self: self.store.inflight)
    @rule(n=st.integers(1, 5))
    def deliver(self, n: int) -> None:
        for _ in range(min(n, len(self.store.inflight))):
            self.hub.dispatch(self.store.inflight.pop(0))

    @precondition(lambda self: any(c.client.asked for c in self.conns))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        waiting = [c for c in self.conns if c.client.asked]
        self._answer(data.draw(st.sampled_from(waiting), "conn"))

    @precondition(lambda self: not self.lost)
    @rule()
    def lose_subscription(self) -> None:
        self.lost = True
        dropped = {m.teacher_id for m in self.store.inflight}
        for conn in self.conns:
            if not conn.syncs:
                continue
            frames = conn.client.frames[conn.syncs[-1].first_frame :]
            # Lost during the first sync, or with announcements for this teacher
            # still on their way: only what follows replay_done is certain.
            if conn.teacher in dropped or not any(f["type"] == "replay_done" for f in frames):
                conn.syncs[-1].lost_during = True
        self.store.subscribed = False
        self.store.inflight.clear()

    @precondition(lambda self: self.lost)
    @rule()
    def restore_subscription(self) -> None:
        self.lost = False
        self.store.subscribed = True
        self.hub.restored()

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self._live()), "conn")
        ids = ["nope"] + [i for p in self.store.pending.values() for i in p]
        conn.client.send({"type": "ack", "id": data.draw(st.sampled_from(ids), "id")},
                         self._tick())  # fmt: skip

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self._live()), "conn")
        position = data.draw(st.sampled_from(self._positions(conn.teacher)), "position")
        conn.client.send({"type": "resume", "position": position}, self._tick())

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self._live()), "conn")
        conn.gone = True
        self.hub.registry.remove(conn.teacher, conn.client)

    @rule()
    def settle(self) -> None:
        """Everything announced delivered, every request answered: no gap."""
        if self.lost:
            self.restore_subscription()
        while self.store.inflight or any(c.client.asked for c in self.conns):
            while self.store.inflight:
                self.hub.dispatch(self.store.inflight.pop(0))
            for conn in self.conns:
                while conn.client.asked:
                    self._answer(conn)
        for conn in self._live():
            sync = conn.syncs[-1]
            assert (
                sum(f["type"] == "replay_done" for f in conn.client.frames[sync.first_frame :]) == 1
            )
            frames = conn.client.frames[sync.first_frame :]
            got = {f["id"] for f in frames if f["type"] == "notification"}
            entries = self.store.history.get(conn.teacher, [])
            if sync.after is not None:
                key = position_key(sync.after)
                want = {e.event_id for e in entries if position_key(e.position) > key}
            elif not sync.lost_during:  # everything recorded after the connect
                want = {e.event_id for e in entries if int(e.event_id[3:]) > sync.seq_at_start}
            else:  # the documented floor: after the position in replay_done
                done = next(f for f in frames if f["type"] == "replay_done")
                key = position_key(done["position"])
                want = {e.event_id for e in entries if position_key(e.position) > key}
            assert want <= got, f"gap: {sorted(want - got)} missing"

    # -- invariants ----------------------------------------------------------

    @invariant()
    def isolation_order_and_once(self) -> None:
        for conn in self.conns:
            frames = conn.client.frames
            if not conn.syncs:
                assert frames == [], "a refused connection got frames"
                continue
            assert frames[0]["type"] == "welcome"
            assert [f["type"] for f in frames].count("welcome") == 1
            mine = {e.event_id for e in self.store.history.get(conn.teacher, [])}
            bounds = [s.first_frame for s in conn.syncs] + [len(frames)]
            for start, end in itertools.pairwise(bounds):
                seen: set[str] = set()
                last: tuple[int, int] | None = None
                done = 0
                for f in frames[start:end]:
                    if f["type"] == "replay_done":
                        done += 1
                        assert done == 1, "a second replay_done in one sync"
                    elif f["type"] == "acked":
                        assert f["id"] in mine, "an ack of another teacher's item"
                    elif f["type"] == "notification":
                        assert f["id"] in mine and f["notification"]["teacher_id"] == conn.teacher
                        assert f["id"] not in seen, f"{f['id']} twice in one sync"
                        seen.add(f["id"])
                        if f["pending"]:
                            assert done == 0, "a pending item after replay_done"
                        else:
                            key = position_key(f["position"])
                            assert last is None or key > last, "out of commit order"
                            last = key


SessionMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_session_machine = SessionMachine.TestCase
