"""Sharded fan-out: this replica subscribes (``SSUBSCRIBE``) to the channel of
each teacher connected to it, on the Redis node that owns the teacher's slot.

The ingest script publishes each teacher's part of a batch on the teacher's
channel (``SPUBLISH``, in the teacher's slot), so on a Redis Cluster a message
travels only within its shard instead of to every node, and a replica hears
only its own teachers. Redis itself keeps track of who listens; there are no
leases.

The same rule as interest fan-out keeps a live connection without a gap: a
connection reads its history only once Redis confirmed the subscription to its
teacher's channel (``router.interest.Interest`` holds that bookkeeping). A
subscription in doubt is made again, and only the connections it served catch
up from their last position: a node's connection lost or silent, or an error
answer, puts that node's teachers in doubt; Redis ending a subscription (its
slot moved) puts that teacher in doubt. They subscribe again on a fresh slot
map, on whichever node owns their slots now. Redis unreachable altogether
starts everything over.

redis-py's pub/sub client does not track sharded subscriptions (it would
reconnect silently without them), so each node gets a plain connection of its
own that this module reads and writes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisClusterException, RedisError

from router.cancel import checkpoint
from router.interest import Interest
from router.settings import SILENT_PINGS
from router.store import Store

log = logging.getLogger(__name__)


class _Node:
    """One node's connection: SSUBSCRIBE / SUNSUBSCRIBE out, messages in."""

    def __init__(self, name: str, conn: AbstractConnection, now: float) -> None:
        self.name = name
        self.conn = conn
        self.reader: asyncio.Task[None] | None = None
        self.heard = now  # when the node last said anything (loop time)

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
                 *, slot_map: RedisCluster | None = None,
                 dispatch: Callable[[bytes], None],
                 restored: Callable[[Iterable[str] | None], None],
                 connect: Callable[[str, int], aioredis.Redis],
                 subscribed: asyncio.Event,
                 teachers_gauge: Callable[[int], None] | None = None,
                 ping_every_s: float = 10.0) -> None:  # fmt: skip
        self.redis = redis
        # On a cluster: a client of its own, only to read who owns which slot
        # (read again after a loss by closing and initializing it, which closes
        # every connection it made; the router's own client is not disturbed).
        self._map = slot_map
        self.store = store
        self.interest = interest
        self._dispatch = dispatch
        self._restored = restored  # catch the connections of these teachers up
        self._connect = connect  # a client for one node (host, port), for its settings
        self.subscribed = subscribed
        self._gauge = teachers_gauge
        self._ping_every = ping_every_s
        self._nodes: dict[str, _Node] = {}
        self._teacher_of: dict[bytes, str] = {}  # channel -> teacher
        self._node_of: dict[str, str] = {}  # teacher -> the node its SSUBSCRIBE went to
        self._dropping: set[bytes] = set()  # channels this replica unsubscribed from
        self._refresh = False  # read the slot map before the next round
        self.losses = 0  # nodes (or whole sessions) whose subscriptions were lost
        self._back = 0  # teachers subscribed again since the last loss was all made good

    async def run(self) -> None:
        """Subscribe, re-subscribe after every loss, never give up."""
        try:
            await self._run()
        finally:
            if self._map is not None:
                await self._map.aclose()

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            checkpoint()
            try:
                await self._session()
            except (RedisError, RedisClusterException, OSError) as exc:
                self.losses += 1
                self.subscribed.clear()
                log.warning("sharded fan-out: Redis unreachable (%s); subscribing every teacher "
                            "again in %.1f s", exc, backoff)  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.2
            finally:
                await self._close_all()

    async def _session(self) -> None:
        """One run of subscriptions: every teacher here subscribed afresh, then
        kept so; a node lost on the way costs only its own teachers a catch-up."""
        loop = asyncio.get_running_loop()
        self._dropping.clear()
        self._teacher_of.clear()
        self._node_of.clear()
        self._refresh = True
        self.interest.lost_some(self.interest.connected())
        next_ping = loop.time() + self._ping_every
        backoff = 0.2
        while True:
            checkpoint()  # redis-py may lose a cancellation (router/cancel.py)
            if self._refresh:
                if self._map is not None:  # who owns which slot now
                    await self._map.aclose()
                    await self._map.initialize()
                else:
                    await self.redis.ping()
                self._refresh = False
                self.subscribed.set()
            register, withdraw = self.interest.pending_changes()
            await self._unsubscribe(withdraw)
            unreachable = await self._subscribe(register)
            if self._gauge is not None:
                self._gauge(self.interest.teachers)
            if unreachable:  # tried again after a pause, on a fresh slot map
                self.interest.failed(unreachable)
                self._refresh = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            if loop.time() >= next_ping:
                await self._ping_all()
                next_ping = loop.time() + self._ping_every
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_ping - loop.time())):
                    await self.interest.wake.wait()

    async def _ping_all(self) -> None:
        """Ping every node; give up on one that said nothing since the last
        pings (hung, or cut off without its connection closing)."""
        now = asyncio.get_running_loop().time()
        for node in list(self._nodes.values()):
            silent = now - node.heard
            if silent > SILENT_PINGS * self._ping_every:
                self._node_lost(node, f"no answer in {silent:.1f} s")
                await node.close()
                continue
            try:
                await node.conn.send_packed_command(node.conn.pack_command("PING"),
                                                    check_health=False)  # fmt: skip
            except Exception as exc:
                self._node_lost(node, f"{type(exc).__name__}: {exc}")

    async def _unsubscribe(self, teachers: list[str]) -> None:
        """SUNSUBSCRIBE each teacher's channel on the node its subscription is on
        (if that node's connection is still there)."""
        by_node: dict[str, list[str]] = {}
        for t in teachers:
            held = self._node_of.pop(t, None)
            if held is not None and held in self._nodes:
                by_node.setdefault(held, []).append(self.store.teacher_channel(t))
        for name, channels in by_node.items():
            node = self._nodes[name]
            self._dropping.update(ch.encode() for ch in channels)
            try:
                await node.send("SUNSUBSCRIBE", channels)
            except (RedisError, OSError) as exc:
                self._node_lost(node, f"{type(exc).__name__}: {exc}")

    async def _subscribe(self, teachers: list[str]) -> list[str]:
        """SSUBSCRIBE each teacher's channel on the node that owns its slot; the
        teachers whose node could not be reached."""
        by_node: dict[tuple[str, int], list[str]] = {}
        for t in teachers:
            by_node.setdefault(self._owner(self.store.teacher_channel(t)), []).append(t)
        unreachable: list[str] = []
        for addr, group in by_node.items():
            name = f"{addr[0]}:{addr[1]}"
            channels = [self.store.teacher_channel(t) for t in group]
            for t, ch in zip(group, channels, strict=True):
                self._teacher_of[ch.encode()] = t
                self._dropping.discard(ch.encode())
                self._node_of[t] = name
            node = self._nodes.get(name)
            try:
                if node is None:
                    node = await self._open(name, addr)
                await node.send("SSUBSCRIBE", channels)
            except (RedisError, OSError) as exc:
                if node is not None:
                    self._node_lost(node, f"{type(exc).__name__}: {exc}")
                else:
                    log.warning("sharded fan-out: node %s unreachable (%s)", name, exc)
                for t in group:
                    self._node_of.pop(t, None)
                unreachable += group
        return unreachable

    def _owner(self, channel: str) -> tuple[str, int]:
        if self._map is not None:
            node = self._map.nodes_manager.get_node_from_slot(self._map.keyslot(channel))
            return node.host, int(node.port)
        assert isinstance(self.redis, aioredis.Redis), "a cluster's slots are in the slot map"
        kw = self.redis.connection_pool.connection_kwargs
        return str(kw.get("host", "localhost")), int(kw.get("port", 6379))

    async def _open(self, name: str, addr: tuple[str, int]) -> _Node:
        client = self._connect(*addr)
        pool = client.connection_pool
        # RESP2 whatever the URL asks for: under RESP3 the confirmations and
        # messages read below would be push frames, which the connection hands
        # to a push handler and never returns.
        conn = pool.connection_class(**{**pool.connection_kwargs, "protocol": 2})
        await conn.connect()  # type: ignore[no-untyped-call]
        node = _Node(name, conn, asyncio.get_running_loop().time())
        node.reader = asyncio.create_task(self._read(node), name=f"sharded-fanout-{name}")
        self._nodes[name] = node
        return node

    async def _read(self, node: _Node) -> None:
        """Everything one node says, in order; the first doubt ends this node's
        subscriptions (its teachers subscribe again, wherever their slots are)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                # No timeout per read (math.inf: none, not even the socket's):
                # the pings of _session notice a silent node, and a message
                # costs no timer.
                msg = await node.conn.read_response(timeout=math.inf)
                node.heard = loop.time()
                self._handle(node, msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a lost connection, an error answer, a timeout
            self._node_lost(node, f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await node.conn.disconnect()

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
                if self.interest.take_back(teacher):
                    self._restored([teacher])
                    self._back += 1
                    if not self.interest.lost_pending:
                        log.info("sharded fan-out subscription restored (%d teachers subscribed "
                                 "again); their connections caught up", self._back)  # fmt: skip
                        self._back = 0
        elif kind == b"sunsubscribe":
            channel = bytes(msg[1])
            if channel in self._dropping:
                self._dropping.discard(channel)
                self._teacher_of.pop(channel, None)
                return
            teacher = self._teacher_of.get(channel)  # Redis dropped it: the slot moved
            if teacher is not None and self._node_of.get(teacher) == node.name:
                log.info("sharded fan-out: node %s ended the subscription of %r (its slot "
                         "moved); subscribing again", node.name, teacher)  # fmt: skip
                del self._node_of[teacher]
                self._refresh = True
                self.losses += 1
                self.interest.lost_some([teacher])

    def _node_lost(self, node: _Node, why: str) -> None:
        """A node's connection is gone or in doubt: the teachers subscribed there
        subscribe again (on a fresh slot map) and only their connections catch up."""
        if self._nodes.get(node.name) is not node:
            return  # already handled
        del self._nodes[node.name]
        teachers = [t for t, n in self._node_of.items() if n == node.name]
        for t in teachers:
            del self._node_of[t]
        self._refresh = True
        self.losses += 1
        log.warning("sharded fan-out subscriptions on node %s lost (%s); subscribing its %d "
                    "teachers again; their connections catch up", node.name, why,
                    len(teachers))  # fmt: skip
        self.interest.lost_some(teachers)

    async def _close_all(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.close()
