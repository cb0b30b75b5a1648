"""Waiting for Redis replicas (``OUTBOX_REDIS_WAIT_REPLICAS``): a batch counts as
recorded, and its Kafka offsets may be committed, only once a replica has it.
Real primaries and replicas; a replica is paused with SIGSTOP so that it stays
connected but acknowledges nothing (docs/architecture.md, "Redis Cluster and
failover")."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from confluent_kafka import Consumer, TopicPartition
from redis.asyncio.cluster import RedisCluster

from router.decode import Routable, decode
from router.errors import ReplicationShortError
from router.store import Store
from stack.manager import StackManager
from stack.settings import StackSettings
from stack.state import Component, StackState
from tests.fix_router import Client, Cluster, make_env, notification, running_router, wait_ready


def _routable(teacher: str, i: int = 0) -> Routable:
    n = notification("class_created", teacher, i)
    return decode(n.to_json().encode(), [("id", uuid.uuid4().hex.encode())])


# How long WAIT may take where a replica is expected to answer (a loaded 2-core
# machine can take well over 300 ms), and where it is paused and cannot.
PATIENT_MS = 10_000
SHORT_MS = 300


def _store(client: aioredis.Redis | RedisCluster, prefix: str, wait: int = 1,
           timeout_ms: int = PATIENT_MS) -> Store:  # fmt: skip
    return Store(client, prefix=prefix, dedupe_ttl_s=600, history_maxlen=100,
                 history_ttl_s=600, wait_replicas=wait, wait_timeout_ms=timeout_ms)  # fmt: skip


@contextmanager
def _paused(pid: int) -> Iterator[None]:
    """The process stopped (its sockets stay open, it answers nothing), then resumed."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[Component, Component]]:
    """A Redis primary and one replica of it, each a process of its own, in sync."""
    tmp = Path(tempfile.mkdtemp(prefix="outbox-test-wait-"))
    manager = StackManager(StackSettings(), state_dir=tmp)
    try:
        primary, replica = manager.start_redis_with_replicas(1)
        yield primary, replica
    finally:
        manager.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_a_batch_is_recorded_only_once_the_replica_has_it(
    primary_and_replica: tuple[Component, Component], unique: str
) -> None:
    primary, replica = primary_and_replica
    prefix = f"w{unique}"
    first = [_routable("ada", i) for i in range(5)]
    second = [_routable("ada", i) for i in range(5, 8)]
    store = _store(aioredis.Redis.from_url(primary.url), prefix)
    fresh = _store(aioredis.Redis.from_url(primary.url), prefix)
    on_replica = redis.Redis.from_url(replica.url)
    try:
        positions = await store.ingest(first, received_at=time.time())
        assert all(isinstance(p, str) and p for p in positions)
        assert on_replica.xlen(store.hist_key("ada")) == 5  # WAIT returned: it is there
        with _paused(replica.pid):
            store.wait_timeout_ms = fresh.wait_timeout_ms = SHORT_MS
            with pytest.raises(ReplicationShortError) as short:
                await store.ingest(second, received_at=time.time())
            assert (short.value.replicas, short.value.wanted) == (0, 1)
            assert "OUTBOX_REDIS_WAIT_REPLICAS" in str(short.value)
            # Sent again on another connection, where every item is a duplicate:
            # still short. WAIT covers what its connection wrote, so the call
            # writes a marker (Redis 7.0 was seen to count any command; the
            # documented rule is the connection's writes).
            with pytest.raises(ReplicationShortError):
                await fresh.ingest(second, received_at=time.time())
        fresh.wait_timeout_ms = PATIENT_MS
        assert await fresh.ingest(second, received_at=time.time()) == [None, None, None]
        assert on_replica.xlen(store.hist_key("ada")) == 8
    finally:
        on_replica.close()
        for s in (store, fresh):
            await s.redis.aclose()


async def test_without_any_replica_the_batch_waits(stack: StackState, unique: str) -> None:
    store = _store(aioredis.Redis.from_url(stack.redis_url), f"w{unique}", timeout_ms=SHORT_MS)
    try:
        with pytest.raises(ReplicationShortError) as short:
            await store.ingest([_routable("ada")], received_at=time.time())
        assert short.value.replicas == 0
        assert "check the replicas" in str(short.value)
        assert await _store(store.redis, f"w{unique}", wait=0).ingest(
            [_routable("bo")], received_at=time.time()
        )  # the same Redis without waiting takes it
    finally:
        await store.redis.aclose()


def _replica_of(cluster: Cluster, host: str, port: int) -> Component:
    with redis.Redis(host=host, port=port) as r:
        info = r.info("replication")
    replica_port = int(info["slave0"]["port"])
    return next(n for n in cluster.nodes if n.port == replica_port)


async def test_on_a_cluster_each_primary_waits_for_its_own_replica(
    redis_cluster: Cluster, unique: str
) -> None:
    rc = RedisCluster.from_url(redis_cluster.url)
    store = _store(rc, f"w{unique}")
    try:
        await rc.initialize()
        teachers = [f"t{i}" for i in range(30)]
        node_of = {t: rc.nodes_manager.get_node_from_slot(rc.keyslot(store.hist_key(t)))
                   for t in teachers}  # fmt: skip
        assert len({(n.host, n.port) for n in node_of.values()}) == 3  # every primary
        positions = await store.ingest([_routable(t) for t in teachers], received_at=time.time())
        assert all(isinstance(p, str) and p for p in positions)
        busy = teachers[0]
        host, port = node_of[busy].host, int(node_of[busy].port)
        others = [t for t in teachers if (node_of[t].host, int(node_of[t].port)) != (host, port)]
        with _paused(_replica_of(redis_cluster, host, port).pid):
            store.wait_timeout_ms = SHORT_MS
            with pytest.raises(ReplicationShortError) as short:
                await store.ingest([_routable(busy, 1), _routable(others[0], 1)],
                                   received_at=time.time())  # fmt: skip
            assert short.value.node == f"{host}:{port}"
            # primaries whose replicas answer are not held up
            store.wait_timeout_ms = PATIENT_MS
            assert (await store.ingest([_routable(others[1], 1)], received_at=time.time()))[0]
    finally:
        await store.aclose()
        await rc.aclose()


def _committed(bootstrap: str, group: str, topic: str) -> int:
    """The offsets the group has committed on the topic's 3 partitions, summed."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        return sum(max(p.offset, 0) for p in parts)
    finally:
        c.close()


async def test_the_router_commits_nothing_while_the_replica_lags(
    stack: StackState, unique: str, primary_and_replica: tuple[Component, Component]
) -> None:
    primary, replica = primary_and_replica
    with make_env(stack, unique) as env:
        settings = env.settings.model_copy(
            update={
                "redis_url": primary.url,
                "redis_wait_replicas": 1,
                "redis_wait_timeout_ms": 200,
            }
        )
        async with running_router(settings) as router:
            await wait_ready(router.port)
            c = await Client.open(router.port, env.token("ada"))
            ids = [env.produce(notification("class_created", "ada", 0))]
            env.flush()
            await c.collect(1)

            async def committed() -> int:
                return await asyncio.to_thread(
                    _committed, stack.kafka_bootstrap, settings.group_id, env.topic
                )

            async def until_committed(n: int, what: str) -> None:
                deadline = time.monotonic() + 20
                while await committed() < n:
                    assert time.monotonic() < deadline, what
                    await asyncio.sleep(0.3)

            await until_committed(1, "the first batch was never committed")
            with _paused(replica.pid):
                ids += [env.produce(notification("class_created", "ada", i)) for i in (1, 2)]
                env.flush()
                # Recorded on the primary and announced: the connection gets them
                # live, but the batch is not committed while no replica has it.
                await c.collect(3)
                await asyncio.sleep(1.5)
                assert await committed() == 1
                assert router.metrics.replication_short._value.get() >= 1
            await until_committed(3, "nothing committed after the replica came back")
            await c.quiet(1.0)
            got = [f["id"] for f in c.notifications()]
            assert got == ids  # once each, in order: the batch sent again was deduplicated
