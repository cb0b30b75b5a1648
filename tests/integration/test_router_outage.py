"""The router when its Redis goes away and comes back: nothing is lost, nothing
is doubled, and /readyz says what is wrong meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from stack.manager import StackManager
from stack.procs import stop_pid
from stack.settings import StackSettings
from tests.fix_router import Client, Env, notification, start_router_process, wait_ready


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
