"""Sharded fan-out: this replica subscribes (``SSUBSCRIBE``) to the channel of
each teacher connected to it, on the Redis node that owns the teacher's slot.

The ingest script publishes each teacher's part of a batch on the teacher's
channel (``SPUBLISH``, in the teacher's slot), so on a Redis Cluster a message
travels only within its shard instead of to every node, and a replica hears
only its own teachers. Redis itself keeps track of who listens; there are no
leases.

The same rule as interest fan-out keeps a live connection without a gap: a
connection reads its history only once Redis confirmed the subscription to its
teacher's channel (``router.interest.Interest`` holds that bookkeeping). Any
doubt about a subscription (a node's connection lost, a slot moved to another
node, an error answer) drops every node connection: all teachers are
subscribed again on the nodes that own their slots now, and every connection
catches up from its last position once all are confirmed.

redis-py's pub/sub client does not track sharded subscriptions (it would
reconnect silently without them), so each node gets a plain connection of its
own that this module reads and writes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisClusterException, RedisError

from router.interest import Interest
from router.store import Store

log = logging.getLogger(__name__)

_PING_EVERY_S = 10.0  # a node that answers nothing for three of these is gone


class SubscriptionLost(Exception):
    """A sharded subscription is in doubt; every one is made again."""


class _Node:
    """One node's connection: SSUBSCRIBE / SUNSUBSCRIBE out, messages in."""

    def __init__(self, name: str, conn: AbstractConnection) -> None:
        self.name = name
        self.conn = conn
        self.reader: asyncio.Task[None] | None = None

    async def send(self, command: str, channels: list[str]) -> None:
        # One command per channel: on a cluster every channel of one command
        # must be in one slot. Written together, answered in order.
        packed = self.conn.pack_commands([(command, ch) for ch in channels])
        await self.conn.send_packed_command(packed, check_health=False)

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        with contextlib.suppress(Exception):
            await self.conn.disconnect()


class ShardedSubscriber:
    """Keeps this replica subscribed to the channels of its teachers."""

    def __init__(self, redis: aioredis.Redis | RedisCluster, store: Store, interest: Interest,
                 *, dispatch: Callable[[bytes], None], restored: Callable[[], None],
                 connect: Callable[[str, int], aioredis.Redis],
                 subscribed: asyncio.Event,
                 teachers_gauge: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.redis = redis
        self.store = store
        self.interest = interest
        self._dispatch = dispatch
        self._restored = restored
        self._connect = connect  # a client for one node (host, port), for its settings
        self.subscribed = subscribed
        self._gauge = teachers_gauge
        self._nodes: dict[str, _Node] = {}
        self._teacher_of: dict[bytes, str] = {}  # channel -> teacher
        self._dropping: set[bytes] = set()  # channels this replica unsubscribed from
        self._lost: asyncio.Future[None] | None = None
        self.losses = 0  # sessions ended by a lost subscription

    async def run(self) -> None:
        """Subscribe, re-subscribe after every loss, never give up."""
        backoff = 0.2
        while True:
            try:
                await self._session()
            except (RedisError, RedisClusterException, OSError, SubscriptionLost) as exc:
                self.losses += 1
                self.subscribed.clear()
                log.warning("sharded fan-out subscriptions lost (%s); subscribing every teacher "
                            "again in %.1f s", exc, backoff)  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.2
            finally:
                await self._close_all()

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        self._dropping.clear()
        self._teacher_of.clear()  # filled again as every teacher is subscribed again
        if isinstance(self.redis, RedisCluster):
            await self.redis.nodes_manager.initialize()  # who owns which slot now
        else:
            await self.redis.ping()
        self.interest.lost()  # every teacher is subscribed again
        self.subscribed.set()
        next_ping = loop.time() + _PING_EVERY_S
        while True:
            wake: asyncio.Future[Any] = asyncio.ensure_future(self.interest.wake.wait())
            waiting: set[asyncio.Future[Any]] = {wake, self._lost}
            try:
                await asyncio.wait(waiting, timeout=max(0.0, next_ping - loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            finally:
                wake.cancel()
            if self._lost.done():
                self._lost.result()  # raises SubscriptionLost
            if loop.time() >= next_ping:
                for node in list(self._nodes.values()):
                    await node.conn.send_packed_command(node.conn.pack_command("PING"),
                                                        check_health=False)  # fmt: skip
                next_ping = loop.time() + _PING_EVERY_S
            register, withdraw = self.interest.pending_changes()
            await self._send("SUNSUBSCRIBE", withdraw)
            await self._send("SSUBSCRIBE", register)
            if self._gauge is not None:
                self._gauge(self.interest.teachers)

    async def _send(self, command: str, teachers: list[str]) -> None:
        by_node: dict[str, tuple[tuple[str, int], list[str]]] = {}
        for t in teachers:
            channel = self.store.teacher_channel(t)
            host, port = self._owner(channel)
            by_node.setdefault(f"{host}:{port}", ((host, port), []))[1].append(channel)
            if command == "SSUBSCRIBE":
                self._teacher_of[channel.encode()] = t
                self._dropping.discard(channel.encode())
            else:
                self._dropping.add(channel.encode())
        for name, (addr, channels) in by_node.items():
            node = self._nodes.get(name)
            if node is None:
                if command == "SUNSUBSCRIBE":
                    continue  # nothing subscribed there on this connection
                node = await self._open(name, addr)
            await node.send(command, channels)

    def _owner(self, channel: str) -> tuple[str, int]:
        if isinstance(self.redis, RedisCluster):
            node = self.redis.nodes_manager.get_node_from_slot(self.redis.keyslot(channel))
            return node.host, int(node.port)
        kw = self.redis.connection_pool.connection_kwargs
        return str(kw.get("host", "localhost")), int(kw.get("port", 6379))

    async def _open(self, name: str, addr: tuple[str, int]) -> _Node:
        client = self._connect(*addr)
        conn = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        await conn.connect()
        node = _Node(name, conn)
        node.reader = asyncio.create_task(self._read(node), name=f"sharded-fanout-{name}")
        self._nodes[name] = node
        return node

    async def _read(self, node: _Node) -> None:
        """Everything one node says, in order; the first doubt ends the session."""
        try:
            while True:
                msg = await node.conn.read_response(timeout=3 * _PING_EVERY_S)
                self._handle(node, msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a lost connection, an error answer, a timeout
            self._lose(f"node {node.name}: {type(exc).__name__}: {exc}")

    def _handle(self, node: _Node, msg: Any) -> None:
        if not isinstance(msg, list) or not msg:
            return  # PONG outside a subscription
        kind = bytes(msg[0]).lower()
        if kind == b"smessage":
            self._dispatch(msg[2])
        elif kind == b"ssubscribe":
            teacher = self._teacher_of.get(bytes(msg[1]))
            if teacher is not None:
                self.interest.registered([teacher])
                if self.interest.take_resync():
                    log.info("sharded fan-out subscription restored (%d teachers subscribed "
                             "again); re-syncing their connections", self.interest.teachers)  # fmt: skip
                    self._restored()
        elif kind == b"sunsubscribe":
            channel = bytes(msg[1])
            if channel in self._dropping:
                self._dropping.discard(channel)
                self._teacher_of.pop(channel, None)
            else:  # Redis dropped it: the slot moved to another node
                self._lose(f"node {node.name} ended the subscription to {channel!r}")

    def _lose(self, why: str) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_exception(SubscriptionLost(why))

    async def _close_all(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.close()
