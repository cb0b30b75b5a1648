"""The router process: wiring and supervised tasks.

``run()`` owns one TaskGroup: the Kafka ingest loop and the Redis fan-out
subscriber; the WebSocket server runs beside them. Shutdown order: stop
consuming (the batch in flight is recorded and committed), close sockets with
1001, close Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.auth import Verifier
from router.cancel import checkpoint
from router.consumer import Ingestor
from router.errors import StoreUnavailableError
from router.fanout import Hub, parse_fanout
from router.interest import Interest
from router.metrics import RouterMetrics
from router.server import WebSocketServer
from router.settings import SILENT_PINGS, RouterSettings, session_calls
from router.sharded import ShardedSubscriber
from router.store import Store

log = logging.getLogger(__name__)


# RESP2 unless OUTBOX_REDIS_URL asks otherwise (``?protocol=3``): redis-py 8
# speaks RESP3 by default; the router's replies and pub/sub are written and
# tested against RESP2.
RESP = 2


def redis_options(settings: RouterSettings) -> dict[str, Any]:
    """What every Redis client of the router is made with (options in the URL,
    such as ``?socket_timeout=``, win over these)."""
    return {"protocol": RESP, "socket_timeout": settings.redis_timeout_s,
            "socket_connect_timeout": settings.redis_timeout_s}  # fmt: skip


def connect_redis(settings: RouterSettings) -> aioredis.Redis | RedisCluster:
    """The client for ``OUTBOX_REDIS_URL``: one Redis, or a cluster's client."""
    kw = {**redis_options(settings), "health_check_interval": settings.redis_health_check_s,
          "max_connections": settings.redis_max_connections}  # fmt: skip
    if settings.redis_cluster:
        cluster: RedisCluster = RedisCluster.from_url(settings.redis_url, **kw)
        return cluster
    single: aioredis.Redis = aioredis.Redis.from_url(settings.redis_url, **kw)
    return single


def node_url(url: str, host: str, port: int) -> str:
    """``url`` (credentials, options) pointed at another node."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@{host}:{port}" if auth else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Router:
    def __init__(
        self, settings: RouterSettings, *, redis_client: aioredis.Redis | RedisCluster | None = None
    ) -> None:
        self.s = settings
        self.verifier = Verifier.from_settings(settings)
        self.metrics = RouterMetrics()
        self.redis = redis_client or connect_redis(settings)
        self._sub_turn = 0  # which cluster node the fan-out subscription tries next
        by_interest = settings.fanout == "interest"
        # Interest fan-out: this replica's name in Redis (its channel, its leases).
        self.replica_id = uuid.uuid4().hex[:16] if by_interest else None
        self.store = Store(self.redis, prefix=settings.redis_prefix, dedupe_ttl_s=settings.dedupe_ttl_s,
                           history_maxlen=settings.history_maxlen,
                           history_ttl_s=settings.history_ttl_s,
                           pending_max=settings.pending_max,
                           observe=lambda call, s: self.metrics.redis_call.labels(call).observe(s),
                           replica_id=self.replica_id,
                           sharded=settings.fanout == "sharded",
                           wait_replicas=settings.redis_wait_replicas,
                           calls_at_once=session_calls(settings.redis_max_connections),
                           wait_timeout_ms=settings.redis_wait_timeout_ms)  # fmt: skip
        # Which teachers this replica serves: leases (interest) or subscriptions (sharded).
        self.interest = Interest() if settings.fanout != "broadcast" else None
        if self.interest is not None and by_interest:
            # A primary that failed over may have lost leases set on it.
            self.store.on_failover = self.interest.lost
        self.hub: Hub[Any] = Hub()
        self.ingestor = Ingestor(settings, store=self.store, metrics=self.metrics)
        self.subscribed = asyncio.Event()
        self.sharded = (
            ShardedSubscriber(self.redis, self.store, self.interest,
                              slot_map=RedisCluster.from_url(settings.redis_url, **redis_options(settings))
                              if settings.redis_cluster else None,
                              dispatch=self._dispatch,
                              restored=self.hub.restored, connect=self._node_client,
                              subscribed=self.subscribed,
                              teachers_gauge=self.metrics.fanout_teachers.set,
                              ping_every_s=settings.redis_health_check_s)
            if self.interest is not None and settings.fanout == "sharded" else None
        )  # fmt: skip
        if self.sharded is not None:
            # A teacher whose slot is moving had its message published on the
            # slot's new primary, while this replica still listens on the old
            # one: its connections catch up from the history.
            self.store.on_redirect = self.hub.restored
        self.server = WebSocketServer(settings, store=self.store, hub=self.hub, verifier=self.verifier,
                                      metrics=self.metrics, ready=self._ready,
                                      detail=self._ingest_detail, interest=self.interest)  # fmt: skip
        self.started = asyncio.Event()

    def _ready(self) -> dict[str, bool]:
        """What /readyz requires: this replica can authenticate and deliver (its
        fan-out subscription; Redis is checked by the server). Owning Kafka
        partitions is not required: a replica beyond the partition count still
        serves WebSockets (see :meth:`_ingest_detail`)."""
        return {"fanout_subscribed": self.subscribed.is_set()}

    def _ingest_detail(self) -> dict[str, str]:
        """Shown by /readyz and /healthz but never failing them: ingest health
        is in the metrics (consumer lag, consumed records)."""
        n = len(self.ingestor.assigned)
        return {"kafka_assigned": f"ok ({n} partitions)" if n else "none (serving only)"}

    @property
    def port(self) -> int:
        return self.server.port

    def _loop_errors(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Out of file descriptors (EMFILE), asyncio stops accepting for a second
        and logs a traceback each time: log one line a minute with a count."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            self.metrics.rejected.labels("emfile").inc()
            count = self.server.throttle.hit("emfile", time.monotonic())
            if count is not None:
                log.warning("out of file descriptors (%s); accepting paused, open connections "
                            "still served (%d times in the last minute); raise the limit "
                            "(ulimit -n) or lower OUTBOX_MAX_CONNECTIONS", exc.strerror,
                            count)  # fmt: skip
            return
        loop.default_exception_handler(context)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set.

        Raises:
            StoreUnavailableError: Redis did not answer within ``start_timeout_s``.
        """
        asyncio.get_running_loop().set_exception_handler(self._loop_errors)
        failed: StoreUnavailableError | None = None
        try:
            await self._run(stop)
        except* StoreUnavailableError as eg:
            failed = eg.exceptions[0]  # type: ignore[assignment]
        finally:
            await self.store.aclose()
            await self.redis.aclose()
            log.info("router stopped")
        if failed is not None:
            raise failed

    async def _run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            sub = tg.create_task(self._subscribe(), name="fanout-subscriber")
            try:
                await asyncio.wait_for(self.subscribed.wait(), self.s.start_timeout_s)
            except TimeoutError:
                sub.cancel()
                raise StoreUnavailableError(
                    f"no answer within {self.s.start_timeout_s:g} s of the start"
                ) from None
            await self.server.start()
            log.info("router listening on ws://%s:%d/ws", self.s.router_host, self.port)
            ingest = tg.create_task(self.ingestor.run(stop), name="kafka-ingest")
            self.started.set()
            await stop.wait()
            await ingest
            await self.server.stop()
            sub.cancel()
            await self._withdraw_all()

    async def _withdraw_all(self) -> None:
        """At shutdown: this replica's leases go now rather than when they end."""
        if self.interest is None or self.replica_id is None:
            return
        _, withdraw = self.interest.pending_changes()
        leases = withdraw + self.interest.renewals()  # the two are disjoint
        try:
            await self.store.withdraw(leases)
        except StoreUnavailableError as exc:
            log.info("leaving %d interest leases to end on their own (%s)", len(leases), exc)

    def _node_client(self, host: str, port: int) -> aioredis.Redis:
        """A client of one node, with the settings of ``OUTBOX_REDIS_URL``."""
        client: aioredis.Redis = aioredis.Redis.from_url(node_url(self.s.redis_url, host, port),
                                                         **redis_options(self.s))  # fmt: skip
        return client

    async def _subscribe(self) -> None:
        if self.sharded is not None:
            await self.sharded.run()  # never returns; ends by cancellation
            return
        # Hand-written rather than a retry library: on every success it also
        # catches the sessions up and resets, and it must never give up; a
        # doubling sleep capped at 5 s says that in three lines.
        backoff = 0.2
        first = True
        while True:
            checkpoint()
            client: aioredis.Redis | None = None
            try:
                client = await self._subscriber_client()
                async with client.pubsub() as ps:
                    await ps.subscribe(self.store.channel)
                    if self.interest is not None:
                        backoff = 0.2
                        await self._listen_by_interest(ps, self.interest)
                        continue
                    if not first:
                        log.info("fan-out subscription restored; re-syncing %d connections",
                                 len(self.hub.registry))  # fmt: skip
                        self.hub.restored()
                    first = False
                    self.subscribed.set()
                    backoff = 0.2
                    async with contextlib.aclosing(self._messages(ps)) as messages:
                        async for msg in messages:
                            if msg.get("type") == "message":
                                self._dispatch(msg["data"])
            except (RedisError, RedisClusterException, OSError) as exc:
                self.subscribed.clear()
                log.warning("fan-out subscription lost (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if client is not None and client is not self.redis:
                    await client.aclose()

    async def _messages(self, ps: Any) -> AsyncGenerator[dict[str, Any], None]:
        """The subscription's messages, as ``ps.listen()`` gives them, watched for
        silence: a node that answers none of SILENT_PINGS pings in a row (one each
        OUTBOX_REDIS_HEALTH_CHECK_S while nothing arrives) is hung or cut off
        without its connection closing, and is given up on (RedisTimeoutError);
        without this, a subscription on it would wait for ever, hearing nothing.

        The reads block without a timer: a read with a timeout arms and cancels
        one per message, and on a cluster, where each slot's part of a batch is
        a message of its own, that was about a tenth of a broadcast replica's
        CPU. A watchdog task wakes once per interval instead, pings, and
        interrupts the read once the node has been silent too long. Iterate it
        in ``contextlib.aclosing``, so the watchdog ends with the loop."""
        loop = asyncio.get_running_loop()
        every = self.s.redis_health_check_s
        reader = asyncio.current_task()
        assert reader is not None
        waiting_since = loop.time()  # when the reader last began to wait on the node
        reading = False  # it waits on the node (not on its caller)
        silent_for = 0.0

        async def watch() -> None:
            nonlocal silent_for
            while True:
                checkpoint()  # ps.ping() may lose the loop's cancellation
                await asyncio.sleep(every)
                quiet = loop.time() - waiting_since
                if reading and quiet > SILENT_PINGS * every:
                    silent_for = quiet
                    reader.cancel()
                    return
                if quiet >= every:
                    # A failed ping is the reader's to see; a ping never answered
                    # is what the rule above notices.
                    with contextlib.suppress(RedisError, OSError):
                        await ps.ping()

        watchdog = asyncio.create_task(watch(), name="fanout-silence-watch")
        try:
            while True:
                reading, waiting_since = True, loop.time()
                try:
                    checkpoint()  # a cancellation the last call lost (health-check pings)
                    msg = await ps.get_message(timeout=None)
                except asyncio.CancelledError:
                    if silent_for and reader.uncancel() == 0:  # the watchdog's, and only it
                        raise RedisTimeoutError(f"the subscription's node answered nothing in "
                                                f"{silent_for:.1f} s") from None  # fmt: skip
                    raise
                finally:
                    reading = False
                if msg is not None:  # None: a health-check pong
                    yield msg
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _listen_by_interest(self, ps: Any, interest: Interest) -> None:
        """The subscription loop of interest fan-out: once Redis confirms this
        replica's own channel, a sender task registers the teachers connected
        here (router/interest.py) while this loop dispatches what arrives.
        Whatever was registered before may be gone (a Redis restart), and what
        was published meanwhile was missed, so everything is registered again
        and the connections catch up once all is back."""
        sender: asyncio.Task[None] | None = None
        try:
            async with contextlib.aclosing(self._messages(ps)) as messages:
                async for msg in messages:
                    if sender is not None and sender.done():
                        sender.result()  # its failure is the subscription's
                    kind = msg.get("type")
                    if kind == "message":
                        self._dispatch(msg["data"])
                    elif kind == "subscribe" and sender is None:
                        interest.lost()
                        self.subscribed.set()
                        sender = asyncio.create_task(self._send_interest(interest),
                                                     name="interest-sender")  # fmt: skip
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender

    async def _send_interest(self, interest: Interest) -> None:
        """Registers and withdraws this replica's interest as teachers come and
        go, one round at a time, and renews the leases before they end."""
        loop = asyncio.get_running_loop()
        lease_ms = int(self.s.interest_lease_s * 1000)
        renew_every = self.s.interest_lease_s / 4
        next_renewal = loop.time() + renew_every
        renewed = loop.time()
        backoff = 0.2
        while True:
            checkpoint()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_renewal - loop.time())):
                    await interest.wake.wait()
            if loop.time() >= next_renewal:
                try:
                    await self.store.register(interest.renewals(), lease_ms=lease_ms)
                    renewed, next_renewal = loop.time(), loop.time() + renew_every
                except StoreUnavailableError as exc:
                    next_renewal = loop.time() + 1.0
                    if loop.time() - renewed > self.s.interest_lease_s * 0.75:
                        log.warning("interest leases not renewed for %.0f s (%s); registering "
                                    "every teacher again", loop.time() - renewed, exc)  # fmt: skip
                        interest.lost()
            register, withdraw = interest.pending_changes()
            try:
                await self.store.register(register, lease_ms=lease_ms)
            except StoreUnavailableError as exc:
                interest.failed(register)
                log.warning("registering %d teachers for fan-out failed (%s); retrying in "
                            "%.1f s", len(register), exc, backoff)  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            interest.registered(register)
            if interest.take_resync():
                log.info("fan-out subscription restored (%d teachers registered again); "
                         "re-syncing %d connections",
                         interest.teachers, len(self.hub.registry))  # fmt: skip
                self.hub.restored()
            try:
                await self.store.withdraw(withdraw)
            except StoreUnavailableError as exc:  # the leases end on their own
                log.warning("withdrawing %d teachers failed (%s)", len(withdraw), exc)
            self.metrics.fanout_teachers.set(interest.teachers)

    def _dispatch(self, data: bytes) -> None:
        try:
            messages = parse_fanout(data)
        except Exception as exc:  # not ours, or a defect: never the loop's end
            # At most a line a minute: a flood of them (something else
            # publishing under this prefix) must not flood the log too.
            count = self.server.throttle.hit("malformed fan-out", time.monotonic())
            if count is not None:
                log.warning("ignoring malformed fan-out messages (%d since the last such line; "
                            "is something else publishing under OUTBOX_REDIS_PREFIX %r?): %s",
                            count, self.s.redis_prefix, exc)  # fmt: skip
            return
        self.metrics.fanout_received.inc(len(messages))
        for m in messages:
            try:
                self.hub.dispatch(m)
            except Exception:
                log.exception("delivering %s to teacher %r failed; the "
                              "connections can resume", m.event_id, m.teacher_id)  # fmt: skip

    async def _subscriber_client(self) -> aioredis.Redis:
        """Where the fan-out subscription listens. On a cluster every node hears
        every PUBLISH, so it is one node, the next one after each loss."""
        if not isinstance(self.redis, RedisCluster):
            return self.redis
        await self.redis.initialize()
        nodes = sorted(self.redis.get_nodes(), key=lambda n: (n.host, n.port))
        node = nodes[self._sub_turn % len(nodes)]
        self._sub_turn += 1
        client: aioredis.Redis = aioredis.Redis.from_url(
            node_url(self.s.redis_url, node.host, int(node.port)), **redis_options(self.s)
        )
        return client
