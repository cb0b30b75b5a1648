"""The WebSocket server (``websockets``, asyncio) and HTTP on the same port.

Paths: ``/ws`` WebSocket; ``/healthz``, ``/readyz``, ``/metrics``; ``/`` and
``/static/*`` the teacher inbox page. See docs/protocol.md for the frames and
close codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from websockets import http11
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Origin

from contracts.protocol import (
    AckFrame,
    AuthFrame,
    CloseCode,
    ErrorFrame,
    ReplayDoneFrame,
    ResumeFrame,
    WelcomeFrame,
    client_frame_adapter,
    valid_position,
)
from router.auth import Identity, Verifier
from router.errors import AuthError, StoreUnavailableError
from router.fanout import FanoutMessage, Registry
from router.limits import LogThrottle, TokenBucket
from router.metrics import RouterMetrics
from router.session import (
    SLOW_CLIENT,
    DirectWrite,
    Outgoing,
    Session,
    created_epoch,
    notification_text,
)
from router.settings import RouterSettings
from router.store import Store

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}


@functools.cache
def _static(name: str) -> bytes:
    """A file of the inbox page, read once."""
    return (STATIC_DIR / name).read_bytes()


_HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 32\r\nConnection: close\r\n\r\nrequest headers are too large\r\n\r\n"
)


class _Connection(ServerConnection):
    """Answers a request whose head is over websockets' limits (a line longer
    than MAX_LINE_LENGTH, more than MAX_NUM_HEADERS headers) with 431, where
    websockets would close the socket without a word."""

    _line = 0
    _lines = 0

    def data_received(self, data: bytes) -> None:
        if self.request is None and self.protocol.state is State.CONNECTING:
            parts = data.split(b"\n")
            longest = max(self._line + len(parts[0]), *(len(p) for p in parts[1:]))
            self._line = self._line + len(parts[0]) if len(parts) == 1 else len(parts[-1])
            self._lines += len(parts) - 1
            if longest > http11.MAX_LINE_LENGTH or self._lines > http11.MAX_NUM_HEADERS + 2:
                if not self.transport.is_closing():
                    log.info("request from %s: head over the size limits; answered 431",
                             self.remote_address[0] if self.remote_address else "?")  # fmt: skip
                    self.transport.write(_HEADERS_TOO_LARGE)
                    self.transport.close()
                return
        super().data_received(data)


class _OneLineHandshakeErrors(logging.Filter):
    """websockets logs every failed opening handshake (a port scanner, a client
    sending garbage or huge headers) with a traceback: one line says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.msg == "opening handshake failed":
            exc = record.exc_info[1]
            causes: list[str] = []
            while exc is not None and len(causes) < 4:
                causes.append(f"{type(exc).__name__}: {exc}")
                exc = exc.__cause__ or exc.__context__
            record.msg, record.args, record.exc_info = "opening handshake failed: %s", (
                " <- ".join(causes),), None  # fmt: skip
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_ws_log = logging.getLogger("websockets.server")
_ws_log.addFilter(_OneLineHandshakeErrors())


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(body))),
         ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]
    )  # fmt: skip
    return Response(status.value, status.phrase, headers, body)


class Hub:
    """Local side of the fan-out: delivers channel messages to this replica's sessions."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self.registry: Registry[Session] = Registry()
        self.metrics = metrics

    def dispatch(self, msg: FanoutMessage) -> None:
        targets = self.registry.targets(msg.teacher_id)
        if not targets:
            return
        if msg.kind == "a":
            text = '{"type":"acked","id":' + json.dumps(msg.event_id) + "}"
            for s in targets:
                s.offer((text, None, None))
            return
        assert msg.position is not None and msg.notification is not None
        item = (
            notification_text(msg.event_id, msg.position, msg.created_at, msg.notification),
            created_epoch(msg.created_at),
            msg.received_at,
        )
        for s in targets:
            for it in s.sync.live(msg.position, msg.event_id, item):
                s.offer(it)


class WebSocketServer:
    def __init__(
        self,
        settings: RouterSettings,
        *,
        store: Store,
        hub: Hub,
        verifier: Verifier,
        metrics: RouterMetrics,
        ready: Callable[[], dict[str, bool]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.store = store
        self.hub = hub
        self.verifier = verifier
        self.metrics = metrics
        self.ready = ready
        self.clock = clock
        self.server: Server | None = None
        self._unauthenticated: dict[str, int] = {}
        self.throttle = LogThrottle()

    # -- HTTP ---------------------------------------------------------------

    async def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/ws":
            if self.server is not None and len(self.server.connections) >= self.s.max_connections:
                self.metrics.rejected.labels("server_full").inc()
                self._note("refusing WebSocket connections: max_connections reached")
                return _response(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                 b"server full; retry with backoff\n", "text/plain")  # fmt: skip
            return None
        if path == "/healthz":
            return _response(http.HTTPStatus.OK, b"ok\n", "text/plain")
        if path == "/readyz":
            checks = self.ready()
            checks["redis"] = await self.store.ping()
            body = "".join(f"{k} {'ok' if v else 'FAIL'}\n" for k, v in checks.items()).encode()
            ok = all(checks.values())
            status = http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE
            return _response(status, body, "text/plain")
        if path == "/metrics":
            return _response(http.HTTPStatus.OK, generate_latest(self.metrics.registry),
                             CONTENT_TYPE_LATEST)  # fmt: skip
        if path in _STATIC:
            name, ctype = _STATIC[path]
            return _response(http.HTTPStatus.OK, _static(name), ctype)
        return _response(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> Server:
        origins: list[Origin | None] | None = None
        if self.s.allowed_origins:
            # None admits clients that send no Origin (CLI tools, services).
            origins = [*(Origin(o) for o in self.s.allowed_origins), None]
        self.server = await serve(
            self.handler,
            self.s.router_host,
            self.s.router_port,
            process_request=self.process_request,
            origins=origins,
            max_size=self.s.max_frame_bytes,
            ping_interval=self.s.ping_interval_s,
            ping_timeout=self.s.ping_timeout_s,
            close_timeout=2,
            compression="deflate" if self.s.ws_compression else None,
            max_queue=16,
            create_connection=_Connection,
            logger=_ws_log,
        )
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        sock = next(iter(self.server.sockets))
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Close every connection with 1001 and stop listening."""
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()

    # -- one connection ------------------------------------------------------

    async def _authenticate(self, ws: ServerConnection) -> tuple[Identity, str | None]:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        resume_values = query.get("resume") or []
        resume = resume_values[0] if resume_values else None
        if resume is not None and not valid_position(resume):
            raise _Close(CloseCode.BAD_REQUEST, "bad resume position")
        header = ws.request.headers.get("Authorization") if ws.request else None
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise _Close(CloseCode.UNAUTHORIZED, "authorization must be a Bearer token")
            return self.verifier.verify(token.strip()), resume
        try:
            raw = await asyncio.wait_for(ws.recv(), self.s.auth_timeout_s)
        except TimeoutError:
            raise _Close(CloseCode.AUTH_TIMEOUT, "no auth frame in time") from None
        try:
            frame = client_frame_adapter.validate_json(raw)
        except ValidationError as exc:
            bad_resume = any(e["loc"][-1:] == ("resume",) for e in exc.errors())
            raise _Close(CloseCode.BAD_REQUEST, "bad resume position" if bad_resume
                         else "first frame must be an auth frame") from None  # fmt: skip
        if not isinstance(frame, AuthFrame):
            raise _Close(CloseCode.BAD_REQUEST, "first frame must be an auth frame")
        return self.verifier.verify(frame.token), frame.resume or resume

    async def handler(self, ws: ServerConnection) -> None:
        cid = uuid.uuid4().hex[:12]
        ip = str(ws.remote_address[0]) if ws.remote_address else "?"
        if self._unauthenticated.get(ip, 0) >= self.s.max_unauthenticated_per_ip:
            self.metrics.rejected.labels("too_many_unauthenticated").inc()
            self._note("too many unauthenticated connections from one address")
            await ws.close(CloseCode.TRY_AGAIN_LATER, "too many unauthenticated connections "
                           "from this address")  # fmt: skip
            return
        self._unauthenticated[ip] = self._unauthenticated.get(ip, 0) + 1
        try:
            identity, resume = await self._authenticate(ws)
        except AuthError as exc:
            self.metrics.rejected.labels("auth").inc()
            log.info("conn %s from %s refused: %s", cid, ip, exc.reason)
            await ws.close(int(exc.code), exc.reason)
            return
        except _Close as exc:
            self.metrics.rejected.labels("protocol").inc()
            log.info("conn %s from %s refused: %s", cid, ip, exc.reason)
            await ws.close(exc.code, exc.reason)
            return
        except ConnectionClosed:
            return
        finally:
            left = self._unauthenticated[ip] - 1
            if left:
                self._unauthenticated[ip] = left
            else:
                del self._unauthenticated[ip]
        teacher = identity.teacher_id
        if self.hub.registry.count(teacher) >= self.s.max_connections_per_teacher:
            self.metrics.rejected.labels("too_many").inc()
            await ws.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections for this teacher")
            return
        session = Session(cid, teacher, queue_max=self.s.send_queue_max,
                          direct=self._direct_writer(ws))  # fmt: skip
        # Buffer live messages from the moment we are registered: no gap.
        session.sync.begin(resume)
        self.hub.registry.add(teacher, session)
        self.metrics.connections.inc()
        log.info("conn %s open teacher=%r resume=%s", cid, teacher, resume)
        welcome = WelcomeFrame(connection_id=cid, teacher_id=teacher,
                               server_time=datetime.now(UTC))  # fmt: skip
        session.offer((welcome.model_dump_json(), None, None))
        reason = "closed"
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._writer(ws, session))
                tg.create_task(self._reader(ws, session, resume))
                tg.create_task(self._watch_end(session))
                tg.create_task(self._expire(identity.expires_at))
        except* _Close as eg:
            first = eg.exceptions[0]
            assert isinstance(first, _Close)
            reason = first.reason
            with contextlib.suppress(ConnectionClosed):
                await ws.close(first.code, first.reason)
        except* (ConnectionClosed, _Done):
            pass
        except* StoreUnavailableError as eg:
            reason = str(eg.exceptions[0])
            log.warning("conn %s: %s", cid, reason)
            with contextlib.suppress(ConnectionClosed):
                await ws.close(1011, "store unavailable; reconnect with resume")
        finally:
            self.hub.registry.remove(teacher, session)
            self.metrics.connections.dec()
            log.info("conn %s closed teacher=%r (%s)", cid, teacher, reason)

    async def _expire(self, expires_at: float) -> None:
        """A session lives as long as its token (docs/protocol.md)."""
        await asyncio.sleep(max(0.0, expires_at + self.verifier.leeway_s - self.clock()))
        raise _Close(CloseCode.UNAUTHORIZED, "token expired")

    def _note(self, what: str) -> None:
        """Log a refusal class at most once a minute, with how often it happened."""
        count = self.throttle.hit(what, time.monotonic())
        if count is not None:
            log.warning("%s (%d times in the last minute)", what, count)

    async def _watch_end(self, session: Session) -> None:
        """Ends the connection when the session is ended from outside: its send
        queue overflowed (1013), or a catch-up after a Redis outage failed (1011)."""
        await session.end.wait()
        assert session.ended is not None
        if session.ended[1] == SLOW_CLIENT:
            self.metrics.slow_dropped.inc()
        raise _Close(*session.ended)

    def _direct_writer(self, ws: ServerConnection) -> DirectWrite:
        """Write a frame synchronously while the socket keeps up.

        ``broadcast()`` writes without waiting (and without backpressure), so it
        is only used while the transport's buffer is below its high-water mark;
        past that frames go through the queue and the writer task, which waits
        for the buffer to drain, and a client that stays behind overflows the
        queue and is closed 1013. This saves a task switch per frame.
        """
        transport = ws.transport
        high = transport.get_write_buffer_limits()[1]
        sent = self._sent

        def write(item: Outgoing) -> bool:
            if ws.protocol.state is not State.OPEN or transport.get_write_buffer_size() >= high:
                return False
            try:
                broadcast((ws,), item[0], raise_exceptions=True)
            except ExceptionGroup:
                return False  # the writer task meets the same error and ends the connection
            sent(item)
            return True

        return write

    def _sent(self, item: Outgoing) -> None:
        """Metrics of a frame just written."""
        _, created, received = item
        if created is None and received is None:
            return
        now = self.clock()
        self.metrics.delivered.inc()
        if created is not None:
            self.metrics.latency.observe(max(0.0, now - created))
        if received is not None:
            self.metrics.router_latency.observe(max(0.0, now - received))

    async def _writer(self, ws: ServerConnection, session: Session) -> None:
        while True:
            item = await session.queue.get()
            await ws.send(item[0])
            self._sent(item)

    async def _reader(self, ws: ServerConnection, session: Session, resume: str | None) -> None:
        await self.sync(session, resume, begun=True)
        bucket = TokenBucket(self.s.rate_limit_per_s, self.s.rate_limit_burst)
        # A resume costs what it replays, not one frame: entries per second,
        # with one whole history as the burst.
        replay_budget = TokenBucket(self.s.replay_rate_per_s, self.s.history_maxlen)
        errors = 0
        async for raw in ws:
            problem: tuple[str, str] | None = None
            if not bucket.allow(time.monotonic()):
                problem = ("rate_limited", "too many messages; slow down")
            elif isinstance(raw, bytes):
                problem = ("bad_frame", "binary frames are not supported; send JSON text")
            else:
                try:
                    frame = client_frame_adapter.validate_json(raw)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    problem = ("bad_frame", f"{first['msg']} at {first['loc']}"[:200])
                else:
                    if isinstance(frame, AckFrame):
                        await self.store.ack(session.teacher_id, frame.id)
                    elif isinstance(frame, ResumeFrame):
                        problem = await self._resume(session, frame.position, replay_budget)
                    else:
                        problem = ("already_authenticated", "this connection is authenticated")
            if problem is not None:
                errors += 1
                if errors > self.s.max_errors:
                    raise _Close(CloseCode.POLICY_VIOLATION, f"too many bad frames ({problem[0]})")
                session.offer((ErrorFrame(code=problem[0], message=problem[1]).model_dump_json(),
                               None, None))  # fmt: skip
        raise _Done

    async def _resume(self, session: Session, position: str | None,
                      budget: TokenBucket) -> tuple[str, str] | None:  # fmt: skip
        """A mid-session resume, if the connection's replay budget allows it."""
        cost = await self.store.replay_count(session.teacher_id, position)
        if not budget.take(cost, time.monotonic()):
            self.metrics.rejected.labels("replay_budget").inc()
            return ("rate_limited", f"this resume would replay {cost} notifications; the "
                    f"budget is {self.s.replay_rate_per_s:g} a second, try again later")  # fmt: skip
        await self.sync(session, position)
        return None

    async def sync(self, session: Session, resume: str | None, *, begun: bool = False) -> None:
        """Pending items first, then the missed history, then live; no gap, no duplicate."""
        if not begun:
            session.sync.begin(resume)
        teacher = session.teacher_id
        pending = await self.store.pending(teacher, now=datetime.now(UTC),
                                           limit=self.s.pending_max)  # fmt: skip
        for p in pending:
            session.sync.mark_sent(p.event_id)
            session.offer((notification_text(p.event_id, p.position, p.created_at,
                                             p.notification, pending=True), None, None))  # fmt: skip
        replay = await self.store.replay(teacher, resume)
        replayed = 0
        if resume is None:
            session.sync.skip_to(replay.head)
        else:
            self.metrics.replays.inc()
            for e in replay.entries:
                if session.sync.replayed(e.position, e.event_id):
                    replayed += 1
                    session.offer((notification_text(e.event_id, e.position, e.created_at,
                                                     e.notification, replayed=True), None, None))  # fmt: skip
            self.metrics.replayed.inc(replayed)
        for item in session.sync.finish():
            session.offer(item)
        done = ReplayDoneFrame(recovered=replay.recovered, replayed=replayed,
                               pending=len(pending),
                               position=session.sync.position or replay.head or "0-0")  # fmt: skip
        session.offer((done.model_dump_json(), None, None))
        if session.resync_wanted:
            await self.catch_up(session)

    async def catch_up(self, session: Session) -> None:
        """After the fan-out subscription was lost and restored: send this
        connection what was published meanwhile, in order, once; no pending
        items again, no second ``replay_done``. A connection still in its first
        sync catches up when that sync is done. If Redis fails meanwhile, the
        connection is closed 1011 so that the client resumes."""
        if session.sync.syncing:
            session.resync_wanted = True
            return
        session.resync_wanted = False
        session.sync.hold()
        try:
            replay = await self.store.replay(session.teacher_id, session.sync.position or "0-0")
        except StoreUnavailableError as exc:
            log.warning(
                "conn %s: catching up failed (%s); closing it so it resumes", session.id, exc
            )
            session.end_with(1011, "store unavailable; reconnect with resume")
            return
        for e in replay.entries:
            if session.sync.replayed(e.position, e.event_id):
                session.offer((notification_text(e.event_id, e.position, e.created_at,
                                                 e.notification, replayed=True), None, None))  # fmt: skip
        for item in session.sync.finish():
            session.offer(item)


class _Done(Exception):
    """The client closed its side."""
