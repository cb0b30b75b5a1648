"""The router as a real process: kill -9 mid-burst, graceful stop, the CLI tools."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.fix_router import SECRET, Client, Env, notification, start_router_process, wait_ready


def _cli_env(env: Env) -> dict[str, str]:
    e = dict(os.environ)
    e.update({"OUTBOX_KAFKA_BOOTSTRAP": env.stack.kafka_bootstrap, "OUTBOX_REDIS_URL": env.stack.redis_url,
              "OUTBOX_TOPIC": env.topic, "OUTBOX_DLQ_TOPIC": env.settings.dlq_topic,
              "OUTBOX_JWT_SECRET": SECRET, "OUTBOX_REDIS_PREFIX": env.settings.redis_prefix})  # fmt: skip
    return e


async def test_kill9_mid_burst_then_restart_delivers_each_exactly_once(
    env: Env, tmp_path: Path
) -> None:
    r = start_router_process(env.settings, tmp_path)
    try:
        await wait_ready(r.port)
        c = await Client.open(r.port, env.token("mia"))
        ids = []
        for i in range(600):
            ids.append(env.produce(notification("batch_processing_started", "mia", i)))
            if i == 200:
                env.flush()
                await c.collect(50)
                r.kill9()
        env.flush()
        with pytest.raises((ConnectionClosed, AssertionError, TimeoutError)):
            await c.collect(600, timeout=3)
        pos = c.position
        r2 = start_router_process(env.settings, tmp_path, port=r.port)
        try:
            await wait_ready(r2.port, timeout=60)
            c2 = await Client.open(r2.port, env.token("mia"), resume=pos)
            await c2.collect(600 - len([f for f in c.notifications()]), timeout=60)
            await c2.quiet(1.0)
            got = [f["id"] for f in c.notifications()] + [f["id"] for f in c2.notifications()]
            assert sorted(got) == sorted(ids)
            assert len(got) == len(set(got))
            assert got == ids  # and in order
            await c2.close()
        finally:
            r2.stop()
    finally:
        r.stop()


async def test_sigterm_closes_clients_with_1001(env: Env, tmp_path: Path) -> None:
    r = start_router_process(env.settings, tmp_path)
    try:
        await wait_ready(r.port)
        c = await Client.open(r.port, env.token("ned"))
        await asyncio.to_thread(r.stop)
        assert r.proc.returncode == 0
        with pytest.raises(ConnectionClosed) as ei:
            await c.until(lambda f: False, timeout=10)
        assert ei.value.rcvd is not None and ei.value.rcvd.code == 1001
        assert "consumer closed" in r.log.read_text()
    finally:
        r.stop()


async def test_tail_and_dlq_cli(env: Env, tmp_path: Path) -> None:
    r = start_router_process(env.settings, tmp_path)
    try:
        await wait_ready(r.port)
        cli = [sys.executable, "-m", "outbox.cli"]
        tail = await asyncio.create_subprocess_exec(
            *cli, "tail", "--teacher", "ola", "--url", f"ws://127.0.0.1:{r.port}/ws", "--count", "1",
            env=_cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        await asyncio.sleep(2)
        env.produce(b"garbage", key="ola")
        env.produce(notification("cj_assessment_results_ready", "ola", 1))
        env.flush()
        out, err = await asyncio.wait_for(tail.communicate(), 30)
        assert tail.returncode == 0, err
        assert "cj_assessment_results_ready" in out.decode()
        assert "HIGH" in out.decode()
        await asyncio.sleep(1)
        listed = subprocess.run([*cli, "dlq", "list", "--json"], env=_cli_env(env), capture_output=True,
                                text=True, timeout=60, check=True)  # fmt: skip
        rows = json.loads(listed.stdout)
        assert [x["reason"] for x in rows] == ["invalid_json"]
        assert rows[0]["value"] == "garbage"
    finally:
        r.stop()


async def test_workers_share_the_port_and_deliver_once(env: Env, tmp_path: Path) -> None:
    """`router run --workers 2`: two whole replicas on one port (SO_REUSEPORT);
    connections land on both, every notification reaches its teacher once, and
    SIGTERM stops the parent and every worker."""
    import time

    import httpx

    from stack.procs import alive

    r = start_router_process(env.settings.model_copy(update={"workers": 2}), tmp_path)
    pids: set[int] = set()
    try:
        await wait_ready(r.port, 60)
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            # a fresh connection each time: the kernel spreads them by address
            async with httpx.AsyncClient() as once:
                body = (await once.get(f"http://127.0.0.1:{r.port}/healthz")).text
            pids |= {int(line.split()[3]) for line in body.splitlines()
                     if line.startswith("worker ")}  # fmt: skip
        assert len(pids) == 2, f"only {pids} answered"
        teachers = [f"w-{i}" for i in range(12)]
        clients = [await Client.open(r.port, env.token(t)) for t in teachers]
        sent = {t: env.produce(notification("class_created", t)) for t in teachers}
        env.flush()
        for t, c in zip(teachers, clients, strict=True):
            frames = await c.collect(1, timeout=30)
            await c.quiet(0.3)
            assert [f["id"] for f in c.notifications()] == [sent[t]], frames
            await c.close()
    finally:
        r.stop()
    # the parent waits for its workers before it exits
    assert not [p for p in pids if alive(p)], "a worker outlived the parent"
