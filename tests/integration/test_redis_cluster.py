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
from redis.asyncio.cluster import RedisCluster
from websockets.exceptions import ConnectionClosed

from stack.manager import StackManager
from stack.procs import stop_pid
from stack.settings import StackSettings
from stack.state import StackState
from tests.fix_router import Client, make_env, notification, running_router, wait_ready

BURST = 600


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


@pytest.mark.parametrize("fanout", ["broadcast", "sharded", "broadcast+wait"])
async def test_a_slot_moving_to_another_primary_does_not_stop_delivery(stack: StackState,
                                                                       unique: str,
                                                                       fanout: str) -> None:  # fmt: skip
    """Resharding while notifications flow, done as `redis-cli --cluster
    reshard` does it: the busy teacher's slot is set importing on another
    primary and migrating on its own, its history key goes over first (so the
    old primary answers ASK for it), then the rest of the slot follows and the
    slot is handed over (MOVED from then on). Every notification arrives once,
    in order, and also while the slot moves (with sharded fan-out the message
    goes out on the new primary, which the subscription on the old one does not
    hear: the teacher's connections catch up from the history instead); with
    ``+wait`` a redirected batch is sent again once the slot has moved, since
    a WAIT covers only the writes of its own connection."""
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
                busy = await Client.open(router.port, env.token("busy"))
                hist = router.store.hist_key("busy")
                primaries = _primaries(nodes[0].url)
                probe = redis.Redis.from_url(nodes[0].url)
                slot = int(probe.execute_command("CLUSTER KEYSLOT", hist))
                probe.close()
                src_id = next(i for i, (_h, _p, rs) in primaries.items()
                              if any(a <= slot <= b for a, b in rs))  # fmt: skip
                dst_id = next(i for i in primaries if i != src_id)
                src = redis.Redis(host=primaries[src_id][0], port=primaries[src_id][1])
                dst = redis.Redis(host=primaries[dst_id][0], port=primaries[dst_id][1])
                try:
                    ids = [env.produce(notification("batch_files_uploaded", "busy", i))
                           for i in range(5)]  # fmt: skip
                    env.flush()
                    await busy.collect(5)
                    dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
                    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
                    src.execute_command("MIGRATE", primaries[dst_id][0], primaries[dst_id][1],
                                        "", 0, 5000, "KEYS", hist)  # fmt: skip
                    ids += [env.produce(notification("batch_files_uploaded", "busy", i))
                            for i in range(5, 10)]  # fmt: skip
                    env.flush()
                    if not fanout.endswith("+wait"):  # live while the slot is half moved
                        await busy.collect(10, timeout=20)
                    left = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
                    if left:
                        src.execute_command("MIGRATE", primaries[dst_id][0], primaries[dst_id][1],
                                            "", 0, 5000, "KEYS", *left)  # fmt: skip
                    others = [i for i in primaries if i not in (src_id, dst_id)]
                    for node_id in (dst_id, src_id, *others):
                        host, port, _ = primaries[node_id]
                        n = redis.Redis(host=host, port=port)
                        n.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
                        n.close()
                    ids += [env.produce(notification("batch_files_uploaded", "busy", i))
                            for i in range(10, 15)]  # fmt: skip
                    env.flush()
                    got, resumes = await _collect_resuming(busy, router.port, env.token("busy"),
                                                           set(ids), timeout=30)  # fmt: skip
                    print(f"\nslot {slot} moved ({fanout}): {len(set(got))} of {len(ids)}, "
                          f"{len(got) - len(set(got))} twice, {resumes} resumes")  # fmt: skip
                    assert got == ids  # each once, in order
                    # the client learnt the new map: later batches go straight there
                    assert isinstance(router.store.redis, RedisCluster)
                    owner = router.store.redis.nodes_manager.get_node_from_slot(slot)
                    assert int(owner.port) == primaries[dst_id][1]
                finally:
                    src.close()
                    dst.close()
    finally:
        manager.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)
