"""The relay daemon when Kafka Connect's REST API goes away and comes back.

The relay talks to the stack's real Connect worker through a TCP proxy this
test owns: closing the proxy is, for the relay, Connect being unreachable
(connection refused), without disturbing the worker other tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import urlsplit

import httpx

from relay.daemon import Relay
from stack.procs import free_port
from stack.state import StackState
from tests.fix_kafka import (
    consume,
    create_topic,
    delete_connector,
    make_consumer,
    notify,
    relay_settings_for,
    wait_for,
)
from tests.fix_stack import Database


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; ``stop()`` refuses new connections and
    cuts the open ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.handlers: set[asyncio.Future[None]] = set()
        # Cleared: bytes are read but held, the connections stay open (a peer
        # that hangs, or a network that drops everything without a reset).
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self.handlers, return_exceptions=True), 10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = asyncio.get_running_loop().create_future()
        self.handlers.add(done)
        ends = {writer}
        self.writers |= ends
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
            ends.add(up_w)
            self.writers |= ends
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        except OSError:
            writer.transport.abort()
        finally:
            self.writers -= ends
            self.handlers.discard(done)
            done.set_result(None)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await r.read(65536):
                await self.flowing.wait()
                w.write(data)
                await w.drain()
        w.transport.abort()


async def _healthz(port: int, path: str = "/readyz") -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{port}{path}", timeout=10)
        return r.status_code, json.loads(r.text)


async def test_connect_unreachable_is_reported_and_supervision_resumes(
    stack: StackState, db: Database, unique: str
) -> None:
    target = urlsplit(stack.connect_url)
    assert target.hostname is not None and target.port is not None
    proxy = TcpProxy(target.hostname, target.port)
    await proxy.start()
    s = relay_settings_for(stack, db, unique, connect_url=f"http://127.0.0.1:{proxy.port}",
                           supervise_interval_s=0.5, relay_http_port=0,
                           janitor_enabled=False)  # fmt: skip
    create_topic(stack.kafka_bootstrap, s.topic, 3)
    consumer = make_consumer(s.kafka_bootstrap, s.topic)
    relay = Relay(s)
    stop = asyncio.Event()
    run = asyncio.create_task(relay.run(stop))
    try:

        async def health(code: int, state: str) -> bool:
            port = relay.http_port
            if port is None:
                return False
            got_code, body = await _healthz(port)
            return got_code == code and body["health"] == state

        # the connector created through the proxy, its task running (slot made)
        await wait_for(lambda: health(200, "healthy"), 90)

        await proxy.stop()  # Connect's REST API is gone
        await wait_for(lambda: health(503, "unhealthy"), 30)
        assert relay.http_port is not None
        code, body = await _healthz(relay.http_port)
        assert "Kafka Connect unreachable" in str(body), body
        # a dependency being down is not a reason to restart the relay: alive
        assert (await _healthz(relay.http_port, "/healthz"))[0] == 200
        assert not run.done()  # the daemon keeps going
        # The worker itself still runs: a commit made meanwhile is still shipped.
        notify(db.dsn, 1, teacher="t-outage")
        (m,) = await asyncio.to_thread(consume, consumer, 1, 60)
        assert m.key() == b"t-outage"

        await proxy.start()  # back
        await wait_for(lambda: health(200, "healthy"), 120, interval=1)
        _, body = await _healthz(relay.http_port)
        assert "unreachable" not in str(body), body
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
        consumer.close()
        await proxy.stop()
        delete_connector(s, stack.connect_url)


async def test_a_silent_database_is_reported_not_waited_on(stack: StackState, db: Database,
                                                           unique: str) -> None:  # fmt: skip
    """Postgres behind a proxy that stops passing bytes but keeps the connection
    open: the slot-health read gives up after OUTBOX_PG_TIMEOUT_S (and psycopg's
    bounded try to cancel the query) and says why, instead of holding the
    supervision loop for ever, and reads again once the database answers."""
    dsn = urlsplit(db.dsn)
    assert dsn.hostname is not None and dsn.port is not None
    proxy = TcpProxy(dsn.hostname, dsn.port)
    await proxy.start()
    via = db.dsn.replace(f"{dsn.hostname}:{dsn.port}", f"127.0.0.1:{proxy.port}")
    relay = Relay(relay_settings_for(stack, db, unique, pg_dsn=via, pg_timeout_s=1.0,
                                     relay_http_port=0, janitor_enabled=False))  # fmt: skip
    try:
        await relay.slot_stats()
        assert relay.slot_error is None
        proxy.flowing.clear()
        t0 = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(relay.slot_stats(), 15) is None
        took = asyncio.get_running_loop().time() - t0
        assert relay.slot_error is not None and "answered nothing in 1 s" in relay.slot_error
        # the timeout, then psycopg's try to cancel the query on the server,
        # bounded by psycopg at 5 s + 5 s
        assert took < 15, f"the slot read took {took:.1f} s"
        proxy.flowing.set()
        relay.slot_error = None
        await asyncio.wait_for(relay.slot_stats(), 15)
        assert relay.slot_error is None
    finally:
        proxy.flowing.set()
        await relay.aclose()
        await proxy.stop()
