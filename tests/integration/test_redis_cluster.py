"""The router on a real Redis Cluster when the primary of a busy teacher dies:
kill -9 mid-burst, the replica takes over, and the clients count what they lost
and what they got twice (docs/architecture.md, "Redis Cluster and failover")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from websockets.exceptions import ConnectionClosed

from router.decode import Routable, decode
from router.store import Store
from stack.manager import StackManager
from stack.procs import stop_pid
from stack.settings import StackSettings
from stack.state import StackState
from tests.fix_router import Client, make_env, notification, running_router, wait_ready

BURST = 600


def _routable(kind: str, teacher: str, i: int) -> Routable:
    return decode(
        notification(kind, teacher, i).to_json().encode(), [("id", f"{teacher}-{i}".encode())]
    )


def _has_all(c: Client, before: list[str], want: set[str]) -> Callable[[dict[str, Any]], bool]:
    seen = set(before)
    return lambda _frame: want <= seen | {n["id"] for n in c.notifications()}


async def _reopen(port: int, token: str, position: str | None, deadline: float) -> Client:
    """Resume as a client does: while the failover is still going on the router
    answers 1011 (its store call met the dead node); wait a moment, try again."""
    while True:
        try:
            return await Client.open(port, token, resume=position)
        except ConnectionClosed:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _collect_resuming(c: Client, port: int, token: str, want: set[str],
                            timeout: float = 90) -> tuple[list[str], int]:  # fmt: skip
    """Every notification id received, as a client does it: when the router closes
    the connection (its store call met the dead node), resume from the last
    position. Returns the ids in arrival order and how often it resumed."""
    got: list[str] = []
    resumes = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            await c.until(_has_all(c, got, want), max(0.1, deadline - time.monotonic()))
            await c.quiet(1.0)
            got += [f["id"] for f in c.notifications()]
            await c.close()
            return got, resumes
        except ConnectionClosed:
            got += [f["id"] for f in c.notifications()]
            position = c.position
            await c.close()
            if time.monotonic() > deadline:
                return got, resumes
            resumes += 1
            c = await _reopen(port, token, position, deadline)


@pytest.mark.parametrize("fanout", ["broadcast", "sharded", "broadcast+wait"])
async def test_kill_the_primary_of_a_busy_teacher_mid_burst(stack: StackState, unique: str,
                                                           fanout: str) -> None:  # fmt: skip
    """With sharded fan-out the busy teacher's subscription was on the node that
    dies: the router subscribes again on the promoted replica and the clients
    catch up from their last position. With ``+wait`` (OUTBOX_REDIS_WAIT_REPLICAS=1)
    and two replicas per primary, nothing committed was only on the dead
    primary, so the promoted replica's history holds every notification, once,
    in order."""
    waiting = fanout.endswith("+wait")
    fanout = fanout.removesuffix("+wait")
    tmp = Path(tempfile.mkdtemp(prefix="outbox-test-failover-"))
    manager = StackManager(StackSettings(), state_dir=tmp / "state")
    try:
        # Waiting needs a replica in step after the failover too: with one
        # replica per primary the promoted one would have none, and ingest would
        # wait for it (docs/architecture.md). Two each leave it one.
        nodes = manager.start_redis_cluster(replicas=2 if waiting else 1)
        with make_env(stack, unique, nodes[0].url) as env:
            settings = env.settings.model_copy(
                update={"fanout": fanout, "redis_wait_replicas": 1 if waiting else 0}
            )
            async with running_router(settings) as router:
                await wait_ready(router.port)
                busy = await Client.open(router.port, env.token("busy"))
                calm = await Client.open(router.port, env.token("calm"))
                # the primary that serves the busy teacher's slot
                rc = RedisCluster.from_url(nodes[0].url)
                try:
                    slot = rc.keyslot(router.store.hist_key("busy"))
                    await rc.initialize()
                    owner = rc.nodes_manager.get_node_from_slot(slot)
                    victim = next(n for n in nodes if n.port == int(owner.port))
                    calm_owner = rc.nodes_manager.get_node_from_slot(
                        rc.keyslot(router.store.hist_key("calm")))  # fmt: skip
                    calm_elsewhere = int(calm_owner.port) != victim.port
                finally:
                    await rc.aclose()
                caught_up: list[str] = []  # the teachers whose connections catch up
                if router.sharded is not None:
                    catch_up = router.sharded._restored

                    def spy(teachers: Any) -> None:
                        caught_up.extend(teachers if teachers is not None else ["(all)"])
                        catch_up(teachers)

                    router.sharded._restored = spy
                ids: list[str] = []
                calm_ids: list[str] = []
                killed_at = 0.0
                for i in range(BURST):
                    ids.append(env.produce(notification("batch_files_uploaded", "busy", i)))
                    if i % 50 == 0:
                        calm_ids.append(env.produce(notification("class_created", "calm", i)))
                    env.producer.poll(0)
                    if i == BURST // 3:
                        env.flush()
                        stop_pid(victim.pid, expect=victim.expect, sig=signal.SIGKILL, timeout=5)
                        killed_at = time.monotonic()
                    await asyncio.sleep(0.004)
                env.flush()
                got, reconnects = await _collect_resuming(
                    busy, router.port, env.token("busy"), set(ids)
                )
                calm_got, _ = await _collect_resuming(calm, router.port, env.token("calm"),
                                                      set(calm_ids))  # fmt: skip
                assert set(calm_got) == set(calm_ids)
                lost = set(ids) - set(got)
                duplicated = len(got) - len(set(got))
                print(f"\nfailover ({fanout}{' + wait' if waiting else ''}; caught up: {sorted(set(caught_up))}, calm on "
                      f"another node: {calm_elsewhere}): {BURST} sent, {len(set(got))} received, lost {len(lost)}, "
                      f"duplicated {duplicated}, all in {time.monotonic() - killed_at:.1f} s "
                      f"after the kill; the client resumed {reconnects} times")  # fmt: skip
                # Every notification arrives: recorded before the kill (and
                # replicated), or re-read from Kafka and recorded on the promoted
                # replica. A batch whose script ran on the dying primary but whose
                # answer was lost is recorded again, so a few may come twice; the
                # bound is the batch in flight.
                assert not lost
                if fanout == "sharded":  # its subscription was on the node that died
                    assert router.sharded is not None and router.sharded.losses >= 1
                    # only the connections that node served catch up
                    assert "busy" in caught_up
                    if calm_elsewhere:
                        assert "calm" not in caught_up and "(all)" not in caught_up, caught_up
                assert duplicated <= env.settings.batch_max
                assert set(got) <= set(ids)
                # a new connection replays the history the promoted replica holds
                later = await Client.open(router.port, env.token("busy"), resume="0-0")
                replayed = [f["id"] for f in later.notifications()]
                assert replayed and set(replayed) <= set(ids) and replayed[-1] == got[-1]
                if waiting:
                    assert replayed == ids, (
                        f"history after the failover: {len(replayed)} of {len(ids)}, "
                        f"missing {len(set(ids) - set(replayed))}"
                    )
                await later.close()
    finally:
        manager.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("fanout", ["broadcast", "sharded"])
async def test_a_silent_primary_is_left_for_its_replica(stack: StackState, unique: str,
                                                        fanout: str) -> None:  # fmt: skip
    """A primary that stops answering without closing its connections (SIGSTOP:
    a hung host or a network partition, no RST) is failed over by the cluster.
    The router's calls to it time out (OUTBOX_REDIS_TIMEOUT_S) instead of
    waiting for ever, and a subscription on it goes quiet and is noticed
    (OUTBOX_REDIS_HEALTH_CHECK_S): ingest carries on on the promoted replica and
    both teachers, the one on that primary included, get everything, live or
    by catching up."""
    tmp = Path(tempfile.mkdtemp(prefix="outbox-test-silent-"))
    manager = StackManager(StackSettings(), state_dir=tmp / "state")
    victim_pid = 0
    try:
        nodes = manager.start_redis_cluster(replicas=1)
        with make_env(stack, unique, nodes[0].url) as env:
            try:
                settings = env.settings.model_copy(
                    update={"fanout": fanout, "redis_timeout_s": 2.0, "redis_health_check_s": 1.0}
                )
                async with running_router(settings) as router:
                    await wait_ready(router.port)
                    busy = await Client.open(router.port, env.token("busy"))
                    calm = await Client.open(router.port, env.token("calm"))
                    if fanout == "broadcast":
                        # Its one subscription is on the first node by address
                        # (Router._subscriber_client): that one goes silent.
                        victim = min(nodes, key=lambda n: n.port)
                    else:  # the primary of the busy teacher's slot and subscription
                        rc = RedisCluster.from_url(nodes[0].url)
                        try:
                            await rc.initialize()
                            owner = rc.nodes_manager.get_node_from_slot(
                                rc.keyslot(router.store.hist_key("busy")))  # fmt: skip
                            victim = next(n for n in nodes if n.port == int(owner.port))
                        finally:
                            await rc.aclose()
                    ids = [
                        env.produce(notification("batch_files_uploaded", "busy", i))
                        for i in range(5)
                    ]
                    env.flush()
                    await busy.collect(5)
                    victim_pid = victim.pid
                    os.kill(victim_pid, signal.SIGSTOP)
                    stopped_at = time.monotonic()
                    for i in range(5, 25):
                        ids.append(env.produce(notification("batch_files_uploaded", "busy", i)))
                    calm_ids = [
                        env.produce(notification("class_created", "calm", i)) for i in range(5)
                    ]
                    env.flush()
                    got, resumes = await _collect_resuming(busy, router.port, env.token("busy"),
                                                           set(ids), timeout=60)  # fmt: skip
                    calm_got, _ = await _collect_resuming(calm, router.port, env.token("calm"),
                                                          set(calm_ids), timeout=30)  # fmt: skip
                    print(f"\nsilent primary ({fanout}): busy {len(set(got))} of {len(ids)}, calm "
                          f"{len(set(calm_got))} of {len(calm_ids)}, {time.monotonic() - stopped_at:.1f} s "
                          f"after SIGSTOP, {resumes} resumes")  # fmt: skip
                    assert set(got) == set(ids)
                    assert set(calm_got) == set(calm_ids)
                    assert len(got) - len(set(got)) <= env.settings.batch_max
            finally:
                # Awake before make_env's cleanup, which talks to nodes[0] (the
                # victim, when it is the first by port).
                if victim_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(victim_pid, signal.SIGCONT)
    finally:
        manager.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)


def _primaries(url: str) -> dict[str, tuple[str, int, list[tuple[int, int]]]]:
    """The cluster's primaries: node id -> (host, port, slot ranges)."""
    r = redis.Redis.from_url(url)
    try:
        nodes = r.cluster("NODES")  # parsed: "host:port" -> what CLUSTER NODES says of it
    finally:
        r.close()
    out = {}
    for addr, n in nodes.items():
        if "master" in n["flags"].split(","):
            host, _, port = addr.rpartition(":")
            # each range as ["start", "end"], or ["slot"] for a single slot
            ranges = [(int(r_[0]), int(r_[-1])) for r_ in n["slots"]]
            out[n["node_id"]] = (host, int(port), ranges)
    return out


def _neighbour(store_key: Callable[[str], str], slot: int) -> str:
    """A teacher whose keys are in ``slot`` too."""
    return next(t for t in (f"near-{k}" for k in range(1_000_000))
                if key_slot(store_key(t).encode()) == slot)  # fmt: skip


def _metric(router: Any, name: str, labels: dict[str, str] | None = None) -> float:
    value = router.metrics.registry.get_sample_value(name, labels or {})
    assert value is not None, name
    return float(value)


@pytest.mark.parametrize("fanout", ["broadcast", "sharded", "broadcast+wait"])
async def test_a_slot_moving_to_another_primary_loses_and_repeats_nothing(stack: StackState,
                                                                         unique: str,
                                                                         fanout: str) -> None:  # fmt: skip
    """Resharding while notifications flow, done as `redis-cli --cluster
    reshard` does it. The slot of a busy teacher and of a neighbour (another
    teacher in the same slot) is set importing on another primary and migrating
    on its own, and the busy teacher's history goes over first: the slot's keys
    are split between two primaries. The ingest calls declare their keys, so
    Redis answers TRYAGAIN for that slot and runs none of it; its batches wait
    (nothing dead-lettered, nothing half-written) until the rest of the slot
    follows and the slot is handed over (MOVED from then on: the router's client
    learns the new owner). Every notification of both teachers arrives once, in
    order. With sharded fan-out the message then goes out on the new primary,
    which the subscription on the old one does not hear: the connections catch
    up from the history. Before the keys were declared, a call ran on the primary
    its first key pointed to: on the old one a new key failed the script ("Script
    attempted to access a non local key", and the items were dead-lettered); on
    the new one the neighbour's history was made anew beside the one still on
    the old primary, and the reshard's MIGRATE then failed (BUSYKEY)."""
    tmp = Path(tempfile.mkdtemp(prefix="outbox-test-reshard-"))
    manager = StackManager(StackSettings(), state_dir=tmp / "state")
    try:
        nodes = manager.start_redis_cluster(replicas=1)
        with make_env(stack, unique, nodes[0].url) as env:
            settings = env.settings.model_copy(update={
                "fanout": fanout.removesuffix("+wait"),
                "redis_wait_replicas": 1 if fanout.endswith("+wait") else 0})  # fmt: skip
            async with running_router(settings) as router:
                await wait_ready(router.port)
                hist = router.store.hist_key("busy")
                slot = key_slot(hist.encode())
                near = _neighbour(router.store.hist_key, slot)
                clients = {t: await Client.open(router.port, env.token(t)) for t in ("busy", near)}
                primaries = _primaries(nodes[0].url)
                src_id = next(i for i, (_h, _p, rs) in primaries.items()
                              if any(a <= slot <= b for a, b in rs))  # fmt: skip
                dst_id = next(i for i in primaries if i != src_id)
                admin = {i: redis.Redis(host=h, port=port) for i, (h, port, _) in primaries.items()}
                src, dst = admin[src_id], admin[dst_id]
                dst_host, dst_port, _ = primaries[dst_id]
                ids: dict[str, list[str]] = {"busy": [], near: []}

                def produce(first: int, last: int) -> None:
                    for i in range(first, last):
                        for t, sent in ids.items():  # interleaved: both in every batch
                            sent.append(env.produce(notification("batch_files_uploaded", t, i)))
                    env.flush()

                rejected = {"reason": "store_rejected"}
                try:
                    produce(0, 5)
                    for c in clients.values():
                        await c.collect(5)
                    dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
                    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
                    src.execute_command("MIGRATE", dst_host, dst_port, "", 0, 5000, "KEYS", hist)
                    produce(5, 10)
                    # the split slot's batch is held back, not refused
                    deadline = time.monotonic() + 20
                    while _metric(router, "outbox_router_redis_slot_moving_total") == 0:
                        dead = _metric(router, "outbox_router_dead_lettered_total", rejected)
                        assert dead == 0, (
                            f"{dead:.0f} notifications of the split slot dead-lettered"
                        )
                        assert time.monotonic() < deadline, (
                            "the split slot's batch never met TRYAGAIN"
                        )
                        await asyncio.sleep(0.1)
                    left = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
                    if left:
                        src.execute_command(
                            "MIGRATE", dst_host, dst_port, "", 0, 5000, "KEYS", *left
                        )
                    for node_id in (
                        dst_id,
                        src_id,
                        *[i for i in admin if i not in (src_id, dst_id)],
                    ):
                        admin[node_id].execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
                    produce(10, 15)
                    for t, c in clients.items():
                        got, resumes = await _collect_resuming(c, router.port, env.token(t),
                                                               set(ids[t]), timeout=30)  # fmt: skip
                        print(f"\nslot {slot} moved ({fanout}), {t}: {len(set(got))} of "
                              f"{len(ids[t])}, {len(got) - len(set(got))} twice, {resumes} resumes")  # fmt: skip
                        assert got == ids[t]  # each once, in order
                    assert _metric(router, "outbox_router_dead_lettered_total", rejected) == 0
                    # the client learnt the new map: later batches go straight there
                    assert isinstance(router.store.redis, RedisCluster)
                    owner = router.store.redis.nodes_manager.get_node_from_slot(slot)
                    assert int(owner.port) == dst_port
                finally:
                    for a in admin.values():
                        a.close()
    finally:
        manager.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("mode", ["broadcast", "interest", "sharded"])
async def test_a_cluster_call_declares_every_key_the_ingest_script_makes(stack: StackState,
                                                                         unique: str,
                                                                         mode: str) -> None:  # fmt: skip
    """Redis Cluster checks only the keys a call declares (that is what makes a
    split slot answer TRYAGAIN above), while the ingest script names its keys
    itself. Every key a batch leaves (two teachers, an action item, a duplicate,
    interest leases) is one the call declared, and all are in one slot."""
    client = aioredis.Redis.from_url(stack.redis_url)
    prefix = f"declared-{unique}"
    store = Store(client, prefix=prefix, dedupe_ttl_s=600, history_maxlen=100, history_ttl_s=600,
                  replica_id="r1" if mode == "interest" else None, sharded=mode == "sharded")  # fmt: skip
    try:
        if mode == "interest":
            await store.register(["ada", "bob"], lease_ms=60_000)
        batch = [_routable("batch_files_uploaded", "ada", 0), _routable("batch_validation_failed", "bob", 1),
                 _routable("batch_validation_failed", "ada", 2)]  # fmt: skip
        batch.append(batch[0])  # a duplicate within the batch
        positions = await store.ingest(batch, received_at=time.time())
        assert [isinstance(p, str) for p in positions] == [True, True, True, False]
        made = {k.decode() async for k in client.scan_iter(match=f"{prefix}:*")}
        declared = store.ingest_keys(batch)
        assert declared[0] == store.hist_key("ada")  # the script's KEYS[1]
        assert len(made) >= 6 and made <= set(declared), made - set(declared)
        by_slot = {t: {key_slot(k.encode()) for k in store.ingest_keys([r for r in batch if r.teacher_id == t])}
                   for t in ("ada", "bob")}  # fmt: skip
        assert all(len(slots) == 1 for slots in by_slot.values())
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
