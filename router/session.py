"""The protocol of one WebSocket connection, as a state machine without I/O.

In the manner of the ``websockets`` library's protocol objects: inputs are
calls (a client frame, a fan-out item, the answer of a store request, the
clock, "the fan-out subscription came back"); outputs are read from the
object: frames to send (:attr:`Session.outgoing`), requests to make
(:attr:`Session.requests`) and, once, how to close (:attr:`Session.closing`).
No asyncio, no sockets, no Redis here; ``router.server`` drives it.

Life of a session (docs/protocol.md):

    AUTHENTICATING --auth ok--> ADMITTING --room--> OPEN --...--> CLOSED
          |                         |                 |
          +-- 4400/4401/4408 -------+-- 4429/1013 ----+-- 1008/1011/1013/4401

Once open, a sync (pending items, the missed history, ``replay_done``) runs
first and again for each accepted ``resume`` frame; live items are held during
a sync and released after it (``SyncState``): no gap, no duplicate. After a lost
and restored fan-out subscription the session catches up (history after the
last position it sent, nothing else). Store requests are answered in the order
they were made; the driver runs them one at a time.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from contracts.protocol import (
    AckFrame,
    AuthFrame,
    CloseCode,
    ErrorFrame,
    NotificationFrame,
    ReplayDoneFrame,
    ResumeFrame,
    WelcomeFrame,
    client_frame_adapter,
    position_key,
    valid_position,
)
from router.errors import AuthError
from router.limits import TeacherBudgets, TokenBucket

if TYPE_CHECKING:
    from router.auth import Identity
    from router.settings import RouterSettings
    from router.store import PendingItem, Replay

# (frame text, the outbox row's created_at and the Kafka receipt as epoch
# seconds; None for frames without latency: welcome, replayed, pending, errors)
Outgoing = tuple[str, float | None, float | None]

SLOW_CLIENT = "client too slow; reconnect with resume"
STORE_DOWN = "store unavailable; reconnect with resume"
INTERNAL = "internal error; reconnect with resume"
NOT_AUTH = "first frame must be an auth frame"
BAD_RESUME = "bad resume position"
TOO_FAST = "too many messages; slow down"
# This connection keeps to the limit; the teacher's others spent what they share.
SHARED_SPENT = ("this teacher's connections sent too many messages together; try again "
                "in a moment")  # fmt: skip

# Keep the hand-built frame in step with the model (checked by a unit test).
FRAME_FIELDS = tuple(NotificationFrame.model_fields)


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


def acked_text(event_id: str) -> str:
    return '{"type":"acked","id":' + json.dumps(event_id) + "}"


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
        return [item] if self.accept(position, event_id) else []

    def replayed(self, position: str, event_id: str) -> bool:
        """Whether a history entry should be sent."""
        return self.accept(position, event_id)

    def accept(self, position: str, event_id: str) -> bool:
        """Whether an item at ``position`` goes out now (newer than the last
        sent and not sent up front); records it as sent if so."""
        fresh = self._fresh(position)
        return fresh and event_id not in self.sent_ids

    def mark_sent(self, event_id: str) -> None:
        """A pending item was sent up front: skip it when it shows up again."""
        self.sent_ids.add(event_id)

    def finish(self) -> list[Any]:
        """End of replay: the buffered live items not yet covered, in order."""
        self.syncing = False
        buffered = sorted(self._buffer, key=lambda b: position_key(b[0]))
        self._buffer.clear()
        return [item for position, event_id, item in buffered if self.accept(position, event_id)]

    @property
    def position(self) -> str | None:
        return f"{self.last[0]}-{self.last[1]}" if self.last else None


def _newest(a: str | None, b: str | None) -> str:
    if a is None or b is None:
        return a or b or "0-0"
    return a if position_key(a) >= position_key(b) else b


class Phase(enum.Enum):
    AUTHENTICATING = "authenticating"
    ADMITTING = "admitting"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may do; from the router's settings."""

    auth_timeout_s: float = 5.0
    leeway_s: float = 10.0
    max_connections_per_teacher: int = 10
    pending_max: int = 500
    history_maxlen: int = 1000
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 40
    replay_rate_per_s: float = 100.0
    max_errors: int = 5

    def frame_budgets(self) -> TeacherBudgets:
        """Budgets by teacher for the frames clients send after ``auth``:
        ``rate_limit_per_s`` a second, ``rate_limit_burst`` at once, for all of
        a teacher's connections together. One per server, shared by every
        session (:class:`Session`'s ``frame_budgets``)."""
        return TeacherBudgets(self.rate_limit_per_s, self.rate_limit_burst)

    def replay_budgets(self) -> TeacherBudgets:
        """Budgets by teacher for what syncs replay: ``replay_rate_per_s``
        a second, with one whole history and the pending cap at once. One per
        server, shared by every session (:class:`Session`'s ``replay_budgets``)."""
        return TeacherBudgets(self.replay_rate_per_s, self.history_maxlen + self.pending_max)

    @classmethod
    def from_settings(cls, s: RouterSettings) -> Limits:
        return cls(s.auth_timeout_s, s.jwt_leeway_s, s.max_connections_per_teacher,
                   s.pending_max, s.history_maxlen, s.rate_limit_per_s, s.rate_limit_burst,
                   s.replay_rate_per_s, s.max_errors)  # fmt: skip


# -- what a session asks of its driver -------------------------------------


@dataclass(frozen=True, slots=True)
class Admit:
    """Is there room for one more connection of ``teacher_id``? Answer with
    :meth:`Session.admitted`, synchronously, and register the connection if so."""

    teacher_id: str


@dataclass(frozen=True, slots=True)
class LoadSync:
    """Pending items (at most ``limit``) and the history after ``resume`` (the
    head only, with ``None``): answer with :meth:`Session.sync_loaded`."""

    teacher_id: str
    resume: str | None
    limit: int
    prepaid: int = 0  # taken from the teacher's replay budget when the resume was priced


@dataclass(frozen=True, slots=True)
class LoadCatchUp:
    """The history after ``after``: answer with :meth:`Session.caught_up`."""

    teacher_id: str
    after: str


@dataclass(frozen=True, slots=True)
class CountReplay:
    """How many entries a resume from ``after`` replays, counting at most
    ``limit`` (one more than the teacher's budget has left, so pricing costs no
    more than the budget allows): :meth:`Session.replay_counted`."""

    teacher_id: str
    after: str | None
    limit: int


@dataclass(frozen=True, slots=True)
class Ack:
    """Clear a pending item: answer with :meth:`Session.ack_done` (whether it was pending)."""

    teacher_id: str
    event_id: str


StoreRequest = LoadSync | LoadCatchUp | CountReplay | Ack
Request = Admit | StoreRequest


@dataclass(frozen=True, slots=True)
class Close:
    """How the session ends. ``kind`` names the class of reason for metrics:
    auth, protocol, too_many, replay_budget, policy, expired, slow, store, internal."""

    code: int
    reason: str
    kind: str


class Session:
    """One connection's protocol state. Construct it when the handshake is
    accepted, with the ``resume`` query parameter and ``Authorization`` header
    if any; then feed it inputs and drain its outputs after each one."""

    def __init__(
        self,
        connection_id: str,
        *,
        limits: Limits,
        verify: Callable[[str | None], Identity],
        now: float,
        resume: str | None = None,
        authorization: str | None = None,
        replay_budgets: TeacherBudgets | None = None,
        frame_budgets: TeacherBudgets | None = None,
    ) -> None:
        self.id = connection_id
        self.limits = limits
        # What syncs replay is charged to the teacher, not to the connection:
        # the server passes one set of replay budgets to all its sessions.
        self._replays = replay_budgets if replay_budgets is not None else limits.replay_budgets()
        # So are the frames its clients send: a new connection brings no new
        # allowance. What this connection sent lately (the same rate) tells
        # whether a refusal is its own doing: see :meth:`receive`.
        self._frames = frame_budgets if frame_budgets is not None else limits.frame_budgets()
        self._sent_lately = TokenBucket(limits.rate_limit_per_s, limits.rate_limit_burst)
        self._verify = verify
        self.phase = Phase.AUTHENTICATING
        self.teacher_id: str | None = None
        self.expires_at: float | None = None
        self.resume: str | None = None
        self.outgoing: list[Outgoing] = []
        self.requests: list[Request] = []
        self.closing: Close | None = None
        self.sync = SyncState()
        self._asked: list[StoreRequest] = []  # made, not yet answered, in order
        self._clock = now  # the time of the latest input
        self._auth_deadline = now + limits.auth_timeout_s
        self._errors = 0
        # The subscription came back during a sync: catch up when it is done.
        self._resync_wanted = False
        # A resume being priced, and the one waiting for the sync in progress
        # (a tuple, as None is a valid position); a newer one replaces it.
        self._pricing: CountReplay | None = None
        self._waiting: tuple[str | None] | None = None
        self._floor: str | None = None  # the head when a sync without resume read it
        if resume is not None and not valid_position(resume):
            self._close(CloseCode.BAD_REQUEST, BAD_RESUME, "protocol")
            return
        self._query_resume = resume
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                self._close(CloseCode.UNAUTHORIZED, "authorization must be a Bearer token",
                            "auth")  # fmt: skip
                return
            self._authenticate(token.strip(), resume)

    # -- inputs: the client ---------------------------------------------------

    def receive(self, frame: str | bytes, now: float) -> None:
        """A frame from the client."""
        self._clock = now
        if self.phase is Phase.CLOSED:
            return
        if self.phase is Phase.AUTHENTICATING:
            self._first_frame(frame)
            return
        limits = self.limits
        self._sent_lately.spend(1, now)
        if not self._frames.take(self._teacher, 1, now):
            if self._sent_lately.level(now) >= limits.rate_limit_burst - 1:
                # This connection sends one frame at a time (of what it sent
                # lately, at the same rate, only this one is left): the
                # teacher's others spent the allowance. Answered (naming the
                # ack), not counted, so one tab sending too much never gets
                # the teacher's other tabs closed.
                parsed, _ = _parse(frame)
                self._error("rate_limited", SHARED_SPENT,
                            parsed.id if isinstance(parsed, AckFrame) else None)  # fmt: skip
            else:
                self._refuse("rate_limited", TOO_FAST)
            return
        parsed, bad = _parse(frame)
        if isinstance(parsed, AckFrame):
            self._ask(Ack(self._teacher, parsed.id))
        elif isinstance(parsed, ResumeFrame):
            self._waiting = (parsed.position,)
            self._next()
        elif parsed is not None:
            self._refuse("already_authenticated", "this connection is authenticated")
        else:
            self._refuse("bad_frame", bad)

    def tick(self, now: float) -> None:
        """The clock: ends a session that did not authenticate in time, or whose
        token expired."""
        if self.phase is Phase.AUTHENTICATING and now >= self._auth_deadline:
            self._close(CloseCode.AUTH_TIMEOUT, "no auth frame in time", "protocol")
        elif (self.phase is Phase.OPEN and self.expires_at is not None
              and now >= self.expires_at + self.limits.leeway_s):  # fmt: skip
            self._close(CloseCode.UNAUTHORIZED, "token expired", "expired")

    def deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (epoch seconds), if ever."""
        if self.phase is Phase.AUTHENTICATING:
            return self._auth_deadline
        if self.phase is Phase.OPEN and self.expires_at is not None:
            return self.expires_at + self.limits.leeway_s
        return None

    # -- inputs: the driver ---------------------------------------------------

    def admitted(self, open_connections: int, now: float) -> bool:
        """The answer to :class:`Admit`: how many connections the teacher has
        open. True if this one is admitted (register it before anything else
        is delivered); False and a 4429 close if not, or 1013 while the
        teacher's replay budget is spent (its connections' syncs replayed
        more than it allows: reconnecting in a loop buys no new budget)."""
        assert self.phase is Phase.ADMITTING and self.teacher_id is not None
        self._clock = now
        if open_connections >= self.limits.max_connections_per_teacher:
            self._close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections for this teacher",
                        "too_many")  # fmt: skip
            return False
        wait = self._replays.wait_s(self.teacher_id, now)
        if wait > 0:
            self._close(CloseCode.TRY_AGAIN_LATER, f"this teacher's connections replayed too "
                        f"much; reconnect in {math.ceil(wait)} s", "replay_budget")  # fmt: skip
            return False
        self.phase = Phase.OPEN
        self.sync.begin(self.resume)  # hold live items from now on: no gap
        welcome = WelcomeFrame(connection_id=self.id, teacher_id=self.teacher_id,
                               server_time=datetime.fromtimestamp(now, UTC))  # fmt: skip
        self._send(welcome.model_dump_json())
        self._ask(LoadSync(self.teacher_id, self.resume, self.limits.pending_max))
        return True

    def too_slow(self) -> None:
        """The client does not read: its send queue overflowed."""
        self._close(CloseCode.TRY_AGAIN_LATER, SLOW_CLIENT, "slow")

    def store_failed(self, request: StoreRequest) -> None:
        """A store request failed because Redis is unreachable."""
        self._answered(request)
        self._close(1011, STORE_DOWN, "store")

    def internal_error(self) -> None:
        """The driver met a defect serving this session."""
        self._close(1011, INTERNAL, "internal")

    # -- inputs: the store's answers ------------------------------------------

    def sync_loaded(self, request: LoadSync, pending: Sequence[PendingItem],
                    replay: Replay, now: float) -> int:  # fmt: skip
        """The answer to :class:`LoadSync`: sends the pending items, the missed
        history, the held live items and ``replay_done``, and charges what was
        read to the teacher's replay budget (into debt if need be: a sync that
        started is served whole). Returns how many history entries were replayed."""
        if not self._answered(request):
            return 0
        self._clock = now
        self._replays.spend(self._teacher, len(pending) + len(replay.entries) - request.prepaid,
                            now)  # fmt: skip
        sync = self.sync
        for p in pending:
            sync.mark_sent(p.event_id)
            self._send(notification_text(p.event_id, p.position, p.created_at, p.notification,
                                         pending=True))  # fmt: skip
        replayed = 0
        if request.resume is None:
            # No history: live items from here on, even those the head read just
            # now covers (their announcement may come after the read). The head
            # is where a catch-up starts if nothing was sent yet.
            self._release()
            self._floor = replay.head
        else:
            for e in replay.entries:
                if sync.replayed(e.position, e.event_id):
                    replayed += 1
                    self._send(notification_text(e.event_id, e.position, e.created_at,
                                                 e.notification, replayed=True))  # fmt: skip
            self._release()
        done = ReplayDoneFrame(recovered=replay.recovered, replayed=replayed,
                               pending=len(pending),
                               position=_newest(sync.position, replay.head))  # fmt: skip
        self._send(done.model_dump_json())
        self._next()
        return replayed

    def caught_up(self, request: LoadCatchUp, replay: Replay) -> None:
        """The answer to :class:`LoadCatchUp`: what was published while the
        subscription was lost, once, and the held live items."""
        if not self._answered(request):
            return
        for e in replay.entries:
            if self.sync.replayed(e.position, e.event_id):
                self._send(notification_text(e.event_id, e.position, e.created_at,
                                             e.notification, replayed=True))  # fmt: skip
        self._release()
        self._next()

    def replay_counted(self, request: CountReplay, cost: int, now: float) -> bool:
        """The answer to :class:`CountReplay`: starts the resume's sync if the
        replay budget allows it (True), else an ``error`` frame (False)."""
        if not self._answered(request):
            return False
        self._clock = now
        self._pricing = None
        if not self._replays.take(self._teacher, cost, now):
            count = f"more than {request.limit - 1}" if cost >= request.limit else str(cost)
            self._refuse("rate_limited", f"this resume would replay {count} notifications; the "
                         f"budget is {self.limits.replay_rate_per_s:g} a second for the "
                         "teacher's connections, try again later")  # fmt: skip
            self._next()
            return False
        self.sync.begin(request.after)
        self._resync_wanted = False  # this sync reads the history after any outage
        self._ask(LoadSync(self._teacher, request.after, self.limits.pending_max, cost))
        return True

    def ack_done(self, request: Ack, was_pending: bool) -> None:
        """The answer to :class:`Ack`. The ``acked`` frame comes through the
        fan-out (to every connection of the teacher); an id that was not
        pending for this teacher gets ``not_pending``, whether it never
        existed, was acknowledged already, expired, or belongs to someone else."""
        if self._answered(request) and not was_pending:
            self._error("not_pending", "no pending action item with this id: already "
                        "acknowledged, expired, or unknown", request.event_id)  # fmt: skip

    # -- inputs: the fan-out --------------------------------------------------

    def live(self, position: str, event_id: str, item: Outgoing) -> None:
        """A live notification for this teacher (the hub only offers those)."""
        if self.phase is Phase.OPEN:
            sync = self.sync
            if sync.syncing:
                sync.live(position, event_id, item)
            elif sync.accept(position, event_id):
                self.outgoing.append(item)

    def acked(self, item: Outgoing) -> None:
        """An acknowledgement of one of this teacher's items, by any connection."""
        if self.phase is Phase.OPEN:
            self.outgoing.append(item)

    def subscription_restored(self) -> None:
        """The fan-out subscription was lost and is back: live items published
        meanwhile were missed. Catch up after the last position sent (after the
        sync in progress, if any)."""
        if self.phase is not Phase.OPEN:
            return
        if self._busy:
            self._resync_wanted = True
            return
        self._resync_wanted = False
        self.sync.hold()
        self._ask(LoadCatchUp(self._teacher, self.sync.position or self._floor or "0-0"))

    # -- internals ------------------------------------------------------------

    @property
    def _busy(self) -> bool:
        """A sync or catch-up is in progress, or a resume is being priced."""
        return self.sync.syncing or self._pricing is not None

    def _next(self) -> None:
        """Start what waited for the sync in progress: a resume, else a catch-up."""
        if self._busy or self.phase is not Phase.OPEN:
            return
        if self._waiting is not None:
            (position,) = self._waiting
            self._waiting = None
            left = max(0, math.floor(self._replays.level(self._teacher, self._clock)))
            self._pricing = CountReplay(self._teacher, position,
                                        min(left, self.limits.history_maxlen) + 1)  # fmt: skip
            self._ask(self._pricing)
        elif self._resync_wanted:
            self.subscription_restored()

    @property
    def _teacher(self) -> str:
        assert self.teacher_id is not None
        return self.teacher_id

    def _first_frame(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self._close(CloseCode.BAD_REQUEST, NOT_AUTH, "protocol")
            return
        try:
            parsed = client_frame_adapter.validate_json(frame)
        except ValidationError as exc:
            bad_resume = any(e["loc"][-1:] == ("resume",) for e in exc.errors())
            self._close(CloseCode.BAD_REQUEST, BAD_RESUME if bad_resume else NOT_AUTH, "protocol")
            return
        if not isinstance(parsed, AuthFrame):
            self._close(CloseCode.BAD_REQUEST, NOT_AUTH, "protocol")
            return
        self._authenticate(parsed.token, parsed.resume or self._query_resume)

    def _authenticate(self, token: str, resume: str | None) -> None:
        try:
            identity = self._verify(token)
        except AuthError as exc:
            self._close(int(exc.code), exc.reason, "auth")
            return
        self.teacher_id = identity.teacher_id
        self.expires_at = identity.expires_at
        self.resume = resume
        self.phase = Phase.ADMITTING
        self.requests.append(Admit(identity.teacher_id))

    def _release(self) -> None:
        self.outgoing.extend(self.sync.finish())

    def _send(self, text: str) -> None:
        self.outgoing.append((text, None, None))

    def _ask(self, request: StoreRequest) -> None:
        self._asked.append(request)
        self.requests.append(request)

    def _answered(self, request: StoreRequest) -> bool:
        """Take ``request`` off the list of those asked; False once closed."""
        if not self._asked or self._asked[0] is not request:
            raise RuntimeError(f"answer out of order: {request!r}")
        del self._asked[0]
        return self.phase is not Phase.CLOSED

    def _refuse(self, code: str, message: str) -> None:
        self._errors += 1
        if self._errors > self.limits.max_errors:
            self._close(CloseCode.POLICY_VIOLATION, f"too many bad frames ({code})", "policy")
        else:
            self._error(code, message)

    def _error(self, code: str, message: str, ack_id: str | None = None) -> None:
        """An ``error`` frame; ``ack_id`` names the ``ack`` it answers."""
        self._send(ErrorFrame(code=code, message=message, id=ack_id)
                   .model_dump_json(exclude_none=True))  # fmt: skip

    def _close(self, code: int, reason: str, kind: str) -> None:
        if self.phase is not Phase.CLOSED:
            self.phase = Phase.CLOSED
            self.closing = Close(code, reason, kind)
            self.outgoing.clear()
            self.requests.clear()


def _parse(frame: str | bytes) -> tuple[AuthFrame | ResumeFrame | AckFrame | None, str]:
    """A client frame after ``auth``: the frame, or None and what is wrong with it."""
    if isinstance(frame, bytes):
        return None, "binary frames are not supported; send JSON text"
    try:
        return client_frame_adapter.validate_json(frame), ""
    except ValidationError as exc:
        first = exc.errors()[0]
        return None, f"{first['msg']} at {first['loc']}"[:200]
