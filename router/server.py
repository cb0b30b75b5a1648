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
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets import http11
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Origin

from contracts.protocol import CloseCode
from contracts.words import catalog_json
from router.auth import Verifier
from router.cancel import checkpoint
from router.errors import StoreUnavailableError
from router.fanout import Hub
from router.interest import Interest
from router.limits import LogThrottle
from router.metrics import RouterMetrics
from router.session import (
    Admit,
    CountReplay,
    Limits,
    LoadCatchUp,
    LoadSync,
    Outgoing,
    Phase,
    Session,
    StoreRequest,
)
from router.settings import RouterSettings
from router.store import Store

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/catalog.json": ("catalog.json", "application/json"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}


@functools.cache
def _static(name: str) -> bytes:
    """A file of the inbox page, read once."""
    if name == "catalog.json":
        return catalog_json().encode()
    return (STATIC_DIR / name).read_bytes()


# A Host header fit to name in the policy (else 'self' alone covers ws: and wss:).
_HOST_RE = re.compile(
    r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$"
)


def page_policy(host: str | None) -> str:
    """The Content-Security-Policy of the inbox page and its files: its own
    script and style, WebSocket to where it came from, nothing else, never in a
    frame."""
    ws = f" ws://{host} wss://{host}" if host and _HOST_RE.match(host) else ""
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src 'self'{ws}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")  # fmt: skip


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


def _response(status: http.HTTPStatus, body: bytes, content_type: str,
              policy: str | None = None) -> Response:  # fmt: skip
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(body))),
         ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
         ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY")]
    )  # fmt: skip
    if policy is not None:
        headers["Content-Security-Policy"] = policy
    return Response(status.value, status.phrase, headers, body)


class WebSocketServer:
    def __init__(
        self,
        settings: RouterSettings,
        *,
        store: Store,
        hub: Hub[_Link],
        verifier: Verifier,
        metrics: RouterMetrics,
        ready: Callable[[], dict[str, bool]],
        detail: Callable[[], dict[str, str]] = dict,
        clock: Callable[[], float] = time.time,
        interest: Interest | None = None,
    ) -> None:
        self.s = settings
        self.store = store
        self.hub = hub
        # Set with interest-based fan-out: a connection's sync waits for its
        # teacher to be registered (router/interest.py).
        self.interest = interest
        self.verifier = verifier
        self.metrics = metrics
        self.ready = ready
        self.detail = detail
        self.clock = clock
        self.server: Server | None = None
        self.admin: Server | None = None
        self._unauthenticated: dict[str, int] = {}
        self.throttle = LogThrottle()
        self.limits = Limits.from_settings(settings)
        # Per teacher, for all its connections here: what syncs replay, and
        # the frames clients send.
        self.replay_budgets = self.limits.replay_budgets()
        self.frame_budgets = self.limits.frame_budgets()

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
        if path in ("/healthz", "/readyz"):
            return await self.admin_request(conn, request)
        if path == "/metrics" and self.s.admin_port is None:
            return await self.admin_request(conn, request)
        if path in _STATIC:
            name, ctype = _STATIC[path]
            return _response(http.HTTPStatus.OK, _static(name), ctype,
                             page_policy(request.headers.get("Host")))  # fmt: skip
        return _response(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    async def admin_request(self, _conn: ServerConnection, request: Request) -> Response:
        """/healthz, /readyz and /metrics (on the admin port when there is one)."""
        path = urlsplit(request.path).path
        if path == "/metrics":
            return _response(http.HTTPStatus.OK, generate_latest(self.metrics.registry),
                             CONTENT_TYPE_LATEST)  # fmt: skip
        info = "".join(f"{k} {v}\n" for k, v in self.detail().items())
        if self.s.workers > 1 or self.s.reuse_port:
            info += f"worker {self.s.worker_index} pid {os.getpid()}\n"
        if path == "/healthz":
            return _response(http.HTTPStatus.OK, ("ok\n" + info).encode(), "text/plain")
        if path == "/readyz":
            checks = self.ready()
            checks["redis"] = await self.store.ping()
            body = ("".join(f"{k} {'ok' if v else 'FAIL'}\n" for k, v in checks.items())
                    + info).encode()  # fmt: skip
            ok = all(checks.values())
            status = http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE
            return _response(status, body, "text/plain")
        return _response(http.HTTPStatus.NOT_FOUND, b"not found; try /healthz, /readyz or "
                         b"/metrics\n", "text/plain")  # fmt: skip

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
            reuse_port=self.s.reuse_port or None,
        )
        if self.s.admin_port is not None:
            self.admin = await serve(_no_websocket, self.s.admin_host, self.s.admin_port,
                                     process_request=self.admin_request, logger=_ws_log)  # fmt: skip
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        sock = next(iter(self.server.sockets))
        return int(sock.getsockname()[1])

    @property
    def admin_port(self) -> int | None:
        if self.admin is None:
            return None
        return int(next(iter(self.admin.sockets)).getsockname()[1])

    async def stop(self) -> None:
        """Close every connection with 1001 and stop listening."""
        if self.admin is not None:
            self.admin.close()
            await self.admin.wait_closed()
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()

    # -- one connection ------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        """Drive one connection's :class:`Session` until it ends."""
        cid = uuid.uuid4().hex[:12]
        ip = str(ws.remote_address[0]) if ws.remote_address else "?"
        if self._unauthenticated.get(ip, 0) >= self.s.max_unauthenticated_per_ip:
            self.metrics.rejected.labels("too_many_unauthenticated").inc()
            self._note("too many unauthenticated connections from one address")
            await ws.close(CloseCode.TRY_AGAIN_LATER, "too many unauthenticated connections "
                           "from this address")  # fmt: skip
            return
        path = ws.request.path if ws.request else ""
        resumes = parse_qs(urlsplit(path).query).get("resume")
        resume = resumes[0] if resumes else None
        header = ws.request.headers.get("Authorization") if ws.request else None
        self._unauthenticated[ip] = self._unauthenticated.get(ip, 0) + 1
        try:
            session = Session(cid, limits=self.limits, verify=self.verifier.verify,
                              now=self.clock(), resume=resume, authorization=header,
                              replay_budgets=self.replay_budgets,
                              frame_budgets=self.frame_budgets)  # fmt: skip
            link = _Link(self, ws, session)
            link.flush()
            while session.phase is Phase.AUTHENTICATING:
                wait = (session.deadline() or 0.0) - self.clock()
                try:
                    async with asyncio.timeout(max(0.0, wait)):
                        raw = await ws.recv()
                except TimeoutError:
                    session.tick(self.clock())
                else:
                    session.receive(raw, self.clock())
                link.flush()
        except ConnectionClosed:
            return
        finally:
            left = self._unauthenticated[ip] - 1
            if left:
                self._unauthenticated[ip] = left
            else:
                del self._unauthenticated[ip]
        if not link.registered:
            close = session.closing
            assert close is not None
            self.metrics.rejected.labels(close.kind).inc()
            log.info("conn %s from %s refused: %s", cid, ip, close.reason)
            with contextlib.suppress(ConnectionClosed):
                await ws.close(close.code, close.reason)
            return
        log.info("conn %s open teacher=%r resume=%s", cid, session.teacher_id, session.resume)
        reason = "closed"
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._writer(ws, link))
                tg.create_task(self._reader(ws, link))
                tg.create_task(self._store_worker(link))
                tg.create_task(self._timer(link))
                tg.create_task(self._watch_end(link))
        except* _Close as eg:
            first = eg.exceptions[0]
            assert isinstance(first, _Close)
            reason = first.reason
            with contextlib.suppress(ConnectionClosed):
                await ws.close(first.code, first.reason)
        except* (ConnectionClosed, _Done):
            pass
        finally:
            link.unregister()
            log.info("conn %s closed teacher=%r (%s)", cid, session.teacher_id, reason)

    def _note(self, what: str) -> None:
        """Log a refusal class at most once a minute, with how often it happened."""
        count = self.throttle.hit(what, time.monotonic())
        if count is not None:
            log.warning("%s (%d times in the last minute)", what, count)

    async def _watch_end(self, link: _Link) -> None:
        """Ends the connection when its session closes: a protocol rule, an
        expired token, an overflowing send queue (1013), Redis failing (1011)."""
        await link.ended.wait()
        close = link.session.closing
        assert close is not None
        if close.kind == "slow":
            self.metrics.slow_dropped.inc()
        raise _Close(close.code, close.reason)

    async def _timer(self, link: _Link) -> None:
        session = link.session
        while (deadline := session.deadline()) is not None:
            await asyncio.sleep(max(0.0, deadline - self.clock()))
            session.tick(self.clock())
            link.flush()

    async def _reader(self, ws: ServerConnection, link: _Link) -> None:
        session = link.session
        async for raw in ws:
            session.receive(raw, self.clock())
            link.flush()
        raise _Done

    async def _store_worker(self, link: _Link) -> None:
        """Runs the session's store requests one at a time, in order."""
        session, store = link.session, self.store
        while True:
            checkpoint()  # a cancellation redis-py lost ends the worker all the same
            req = await link.store_requests.get()
            try:
                if isinstance(req, LoadSync):
                    await self._subscribed(link)
                    pending = await store.pending(req.teacher_id, now=datetime.now(UTC),
                                                  limit=req.limit)  # fmt: skip
                    replay = await store.replay(req.teacher_id, req.resume)
                    replayed = session.sync_loaded(req, pending, replay, self.clock())
                    if req.resume is not None:
                        self.metrics.replays.inc()
                        self.metrics.replayed.inc(replayed)
                elif isinstance(req, LoadCatchUp):
                    session.caught_up(req, await store.replay(req.teacher_id, req.after))
                elif isinstance(req, CountReplay):
                    cost = await store.replay_count(req.teacher_id, req.after, req.limit)
                    if not session.replay_counted(req, cost, self.clock()):
                        self.metrics.rejected.labels("replay_budget").inc()
                else:
                    session.ack_done(req, await store.ack(req.teacher_id, req.event_id))
            except StoreUnavailableError as exc:
                log.warning("conn %s: %s; closing it so that it resumes", session.id, exc)
                session.store_failed(req)
            except Exception:  # a defect: end this connection, never the process
                log.exception("conn %s: serving %r failed", session.id, req)
                session.internal_error()
            link.flush()

    async def _subscribed(self, link: _Link) -> None:
        """With interest fan-out, until this replica's interest in the teacher is
        registered: what is recorded from then on is published here, what came
        before is in the history the sync reads, so there is no gap between the two.

        Raises:
            StoreUnavailableError: not confirmed within ``start_timeout_s``.
        """
        fut = link.subscription
        if fut is None or fut.done():
            return
        try:
            async with asyncio.timeout(self.s.start_timeout_s):
                await asyncio.shield(fut)
        except TimeoutError:
            raise StoreUnavailableError("this replica's interest in the teacher was not "
                                        f"registered within {self.s.start_timeout_s:g} s") from None  # fmt: skip

    async def _writer(self, ws: ServerConnection, link: _Link) -> None:
        queue = link.queue
        while True:
            item = await queue.get()
            await ws.send(item[0])
            self._sent(item)

    def _direct_writer(self, ws: ServerConnection) -> Callable[[Outgoing], bool]:
        """Write a frame synchronously while the socket keeps up.

        ``broadcast()`` writes without waiting (and without backpressure), so it
        is only used while the transport's buffer is below its high-water mark;
        past that frames go through the queue and the writer task, which waits
        for the buffer to drain, and a client that stays behind overflows the
        queue and is closed 1013. This saves a task switch per frame.

        A transport that is closing (the peer reset the connection during this
        batch: asyncio closed it, and websockets hears of it next turn) takes
        nothing more: the frames are dropped (the client resumes from its last
        position) rather than written into a dead socket, which asyncio logs
        as a warning per frame, or queued until the queue overflows.
        """
        transport = ws.transport
        high = transport.get_write_buffer_limits()[1]
        sent = self._sent

        def write(item: Outgoing) -> bool:
            if transport.is_closing():
                return True  # gone; see above
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


class _Link:
    """The I/O side of one connection: sends what its session says to send
    (straight to the socket while it keeps up, else through a bounded queue),
    answers admission at once and hands store requests to the store worker."""

    __slots__ = (
        "_direct",
        "ended",
        "queue",
        "registered",
        "server",
        "session",
        "store_requests",
        "subscription",
        "ws",
    )  # fmt: skip

    def __init__(self, server: WebSocketServer, ws: ServerConnection, session: Session) -> None:
        self.server = server
        self.ws = ws
        self.session = session
        self.queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=server.s.send_queue_max)
        self.store_requests: asyncio.Queue[StoreRequest] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.registered = False
        self.subscription: asyncio.Future[None] | None = None  # interest fan-out only
        self._direct = server._direct_writer(ws)

    def flush(self) -> None:
        """Send the session's frames and pass on its requests; mark it ended if it closed."""
        s = self.session
        if s.outgoing:
            queue = self.queue
            for item in s.outgoing:  # a close during the loop empties the list and ends it
                # Straight to the socket only with nothing queued before it: order.
                if queue.empty() and self._direct(item):
                    continue
                try:
                    queue.put_nowait(item)
                except asyncio.QueueFull:
                    s.too_slow()
            s.outgoing.clear()
        while s.requests:
            req = s.requests.pop(0)
            if isinstance(req, Admit):
                self._admit(req)
                self.flush()
            else:
                self.store_requests.put_nowait(req)
        if s.closing is not None:
            self.ended.set()

    def _admit(self, req: Admit) -> None:
        registry = self.server.hub.registry
        if self.session.admitted(registry.count(req.teacher_id), self.server.clock()):
            registry.add(req.teacher_id, self)
            self.registered = True
            self.server.metrics.connections.inc()
            if self.server.interest is not None:
                self.subscription = self.server.interest.acquire(req.teacher_id)

    def unregister(self) -> None:
        if self.registered:
            self.registered = False
            assert self.session.teacher_id is not None
            self.server.hub.registry.remove(self.session.teacher_id, self)
            self.server.metrics.connections.dec()
            if self.server.interest is not None:
                self.server.interest.release(self.session.teacher_id)


async def _no_websocket(ws: ServerConnection) -> None:
    await ws.close(1008, "this is the admin port; WebSocket clients use the public one")


class _Done(Exception):
    """The client closed its side."""
