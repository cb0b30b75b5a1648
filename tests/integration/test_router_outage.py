"""The router when its Redis goes away and comes back: nothing is lost, nothing
is doubled, and /readyz says what is wrong meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from router.decode import decode
from router.errors import StoreFullError
from router.store import Store
from stack.manager import StackManager
from stack.procs import stop_pid
from stack.settings import StackSettings
from tests.fix_router import (
    Client,
    Env,
    notification,
    running_router,
    start_router_process,
    wait_ready,
)


async def _readyz(port: int) -> tuple[int, str]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        return r.status_code, r.text


@pytest.mark.parametrize("fanout", ["broadcast", "interest", "sharded"])
async def test_redis_outage_delays_but_loses_and_doubles_nothing(env: Env, tmp_path: Path,
                                                                 fanout: str) -> None:  # fmt: skip
    # A Redis of this test's own, so stopping it disturbs no other test.
    mgr = StackManager(StackSettings(), state_dir=tmp_path / "redis")
    redis = mgr.start_redis()
    try:
        settings = env.settings.model_copy(update={"redis_url": redis.url, "fanout": fanout})
        r = start_router_process(settings, tmp_path)
        try:
            await wait_ready(r.port)
            c = await Client.open(r.port, env.token("olga"))
            # Action items among them: pending items must not come again after the
            # subscription is restored (they used to, with a second replay_done).
            ids = [
                env.produce(notification("batch_validation_failed" if i % 3 == 0
                                         else "batch_processing_started", "olga", i))
                for i in range(10)
            ]  # fmt: skip
            env.flush()
            await c.collect(10)

            stop_pid(redis.pid, expect="redis-server", timeout=20)  # Redis goes away
            ids += [env.produce(notification("batch_processing_started", "olga", i))
                    for i in range(10, 20)]  # fmt: skip
            env.flush()
            deadline = time.monotonic() + 30
            while (status := await _readyz(r.port))[0] == 200:
                assert time.monotonic() < deadline, "readyz never noticed Redis was gone"
                await asyncio.sleep(0.2)
            assert status[0] == 503 and "redis FAIL" in status[1], status
            await c.quiet(1.0)
            assert len(c.notifications()) == 10  # nothing can be recorded, so nothing is sent
            assert r.proc.poll() is None  # and the router waits instead of dying

            mgr.start_redis(port=redis.port)  # back, with its append-only file
            await c.collect(20, timeout=60)
            await c.quiet(1.0)
            assert [f["id"] for f in c.notifications()] == ids  # each once, in order
            assert [f["type"] for f in c.frames].count("replay_done") == 1
            assert not any(f.get("pending") for f in c.notifications())
            await wait_ready(r.port, timeout=30)
            log = r.log.read_text()
            assert "nothing committed" in log
            assert "fan-out subscription restored" in log
            await c.close()
        finally:
            r.stop()
    finally:
        mgr.stop_started()


@pytest.mark.parametrize("fanout", ["broadcast", "interest", "sharded"])
async def test_a_silent_redis_fails_readiness_at_once_and_loses_nothing(env: Env, tmp_path: Path,
                                                                       fanout: str) -> None:  # fmt: skip
    """A Redis that stops answering without closing its connections (SIGSTOP: a
    hung host, a partition): /readyz says so within OUTBOX_REDIS_TIMEOUT_S, the
    subscription gives it up after three silent pings (it used to wait on it for
    ever), and once it answers again every notification arrives once, in order."""
    mgr = StackManager(StackSettings(), state_dir=tmp_path / "redis")
    redis = mgr.start_redis()
    try:
        settings = env.settings.model_copy(update={"redis_url": redis.url, "fanout": fanout,
                                                   "redis_timeout_s": 1.0,
                                                   "redis_health_check_s": 0.5})  # fmt: skip
        r = start_router_process(settings, tmp_path)
        try:
            await wait_ready(r.port)
            c = await Client.open(r.port, env.token("pia"))
            ids = [
                env.produce(notification("batch_processing_started", "pia", i)) for i in range(5)
            ]
            env.flush()
            await c.collect(5)
            os.kill(redis.pid, signal.SIGSTOP)
            try:
                ids += [env.produce(notification("batch_processing_started", "pia", i))
                        for i in range(5, 10)]  # fmt: skip
                env.flush()
                t0 = time.monotonic()
                status = await _readyz(r.port)
                took = time.monotonic() - t0
                assert status[0] == 503 and "redis FAIL" in status[1], status
                print(f"\n/readyz on a silent Redis ({fanout}): {took:.2f} s")
                # within the 1 s timeout set here (with redis-py's default, 5 s)
                assert took < 3, f"/readyz took {took:.1f} s on a silent Redis"
                deadline = time.monotonic() + 20
                while "answered nothing" not in (log := r.log.read_text()) and (
                        "no answer" not in log):  # fmt: skip
                    assert time.monotonic() < deadline, "the silent subscription went unnoticed"
                    await asyncio.sleep(0.2)
                assert len(c.notifications()) == 5  # nothing can be recorded, so nothing is sent
                assert r.proc.poll() is None
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(redis.pid, signal.SIGCONT)
            await c.collect(10, timeout=60)
            await c.quiet(1.0)
            assert [f["id"] for f in c.notifications()] == ids  # each once, in order
            await wait_ready(r.port, timeout=30)
            await c.close()
        finally:
            r.stop()
    finally:
        mgr.stop_started()


@pytest.mark.parametrize("where", ["single", "cluster"])
async def test_a_full_redis_holds_the_batch_back_and_refuses_nothing(tmp_path: Path,
                                                                     where: str) -> None:  # fmt: skip
    """Redis at its maxmemory (noeviction) refuses writes with OOM. That is Redis
    being unable to take anything, not the items being bad: the batch is
    unavailable (retried, as for a Redis away), none of it is answered as
    refused (dead-lettered), and once there is room it is recorded, in order.
    On one Redis the claim inside the script meets the OOM; on a cluster the
    node's call is refused before it runs."""
    mgr = StackManager(StackSettings(), state_dir=tmp_path / "redis")
    try:
        if where == "single":
            url = mgr.start_redis().url
            admins = [redis_sync.Redis.from_url(url)]
            client: Any = aioredis.Redis.from_url(url)
        else:
            nodes = mgr.start_redis_cluster(replicas=0)
            admins = [redis_sync.Redis.from_url(n.url) for n in nodes]
            client = RedisCluster.from_url(nodes[0].url)
        store = Store(client, prefix="full", dedupe_ttl_s=600, history_maxlen=100,
                      history_ttl_s=600)  # fmt: skip
        batch = [decode(notification("batch_validation_failed", t, i).to_json().encode(),
                        [("id", f"{t}-{i}".encode())]) for i in range(3) for t in ("ada", "bob")]  # fmt: skip
        try:
            for a in admins:
                a.config_set("maxmemory-policy", "noeviction")
                a.config_set("maxmemory", 1)  # below what any Redis uses: full
            with pytest.raises(StoreFullError, match="out of memory") as full:
                await store.ingest(batch, received_at=time.time())
            print(f"\n{where}: {full.value}")
            for a in admins:
                a.config_set("maxmemory", 0)
            positions = await store.ingest(batch, received_at=time.time())
            assert all(isinstance(p, str) for p in positions), positions
            for t in ("ada", "bob"):
                got = [e.event_id for e in (await store.replay(t, "0-0")).entries]
                assert got == [f"{t}-{i}" for i in range(3)]
        finally:
            for a in admins:
                a.close()
            await client.aclose()
            await store.aclose()
    finally:
        mgr.stop_started()


async def test_an_ack_goes_through_while_redis_is_full(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis at its maxmemory (noeviction) refuses the writes that add data, not
    the ack script's (HDEL frees memory, PUBLISH stores nothing): a teacher can
    still clear an action item, and a reconnect no longer gets it as pending."""
    caplog.set_level(logging.INFO)
    mgr = StackManager(StackSettings(), state_dir=tmp_path / "redis")
    redis = mgr.start_redis()
    admin = redis_sync.Redis.from_url(redis.url)
    try:
        settings = env.settings.model_copy(update={"redis_url": redis.url})
        async with running_router(settings) as router:
            await wait_ready(router.port)
            c = await Client.open(router.port, env.token("fay"))
            item = env.produce(notification("batch_validation_failed", "fay", 1))
            env.flush()
            await c.collect(1)
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", 1)  # below what any Redis uses: full
            try:
                with pytest.raises(redis_sync.exceptions.OutOfMemoryError):
                    admin.set("fay-probe", "x")  # full indeed
                await c.ws.send(json.dumps({"type": "ack", "id": item}))
                assert (await c.until(lambda f: f["type"] == "acked", timeout=10))["id"] == item
                again = await Client.open(router.port, env.token("fay"))
                assert [f for f in again.notifications() if f["pending"]] == []
                await again.close()
            finally:
                admin.config_set("maxmemory", 0)
            await c.close()
    finally:
        admin.close()
        mgr.stop_started()
    assert not any(r.exc_info for r in caplog.records)
