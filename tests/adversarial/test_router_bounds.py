"""Every resource a client can make the router spend has a bound (real router,
broker, Redis and WebSocket clients)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from router.store import Store
from tests.fix_router import (
    Client,
    Env,
    notification,
    router_settings,
    running_router,
    start_router_process,
    wait_ready,
)


async def _closed_with(ws: object, timeout: float = 10,
                       frames: list[dict[str, object]] | None = None) -> tuple[int | None, str]:  # fmt: skip
    try:
        while True:
            raw = await asyncio.wait_for(ws.recv(), timeout)  # type: ignore[attr-defined]
            if frames is not None:
                frames.append(json.loads(raw))
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason


async def test_a_session_ends_when_its_token_expires(env: Env) -> None:
    s = env.settings.model_copy(update={"jwt_leeway_s": 0.0})
    async with running_router(s) as router:
        c = await Client.open(router.port, env.token("exp-teacher", ttl=2))
        code, reason = await _closed_with(c.ws, 10)
        assert (code, reason) == (4401, "token expired")


async def test_connection_caps(env: Env) -> None:
    s = env.settings.model_copy(update={"max_connections": 3, "max_unauthenticated_per_ip": 2})
    async with running_router(s) as router:
        url = f"ws://127.0.0.1:{router.port}/ws"
        # Two connections that never authenticate fill this address's allowance.
        idle = [await connect(url) for _ in range(2)]
        third = await connect(url)
        assert await _closed_with(third) == (
            1013,
            "too many unauthenticated connections from this address",
        )
        for w in idle:
            await w.close()
        await asyncio.sleep(0.2)
        ok = [await Client.open(router.port, env.token(f"cap-{i}")) for i in range(3)]
        with pytest.raises(InvalidStatus) as ei:
            await connect(url)
        assert ei.value.response.status_code == 503
        await ok[0].close()
        await asyncio.sleep(0.2)
        again = await Client.open(router.port, env.token("cap-again"))
        await again.close()


async def test_oversized_handshake_headers_get_an_http_answer(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_router(env.settings) as router:
        r, w = await asyncio.open_connection("127.0.0.1", router.port)
        w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        await w.drain()
        answer = await asyncio.wait_for(r.read(), 10)
        w.close()
    assert answer.startswith(b"HTTP/1.1 431 ")
    failed = [r for r in caplog.records if "opening handshake failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None
    assert any("answered 431" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)


async def test_pending_items_are_capped_per_teacher(env: Env) -> None:
    s = env.settings.model_copy(update={"pending_max": 3})
    async with running_router(s) as router:
        await wait_ready(router.port)
        live = await Client.open(router.port, env.token("busy"))
        ids = [env.produce(notification("batch_validation_failed", "busy", i)) for i in range(5)]
        env.flush()
        got = await live.collect(5)
        assert [f["id"] for f in got] == ids  # every one delivered live
        await live.close()
        again = await Client.open(router.port, env.token("busy"))
        pending = [f for f in again.notifications() if f["pending"]]
        assert [f["id"] for f in pending] == ids[:3]
        await again.close()


async def test_a_reconnect_loop_spends_the_teachers_replay_budget_not_the_others(
    env: Env,
) -> None:
    # Burst: one history (20) and the pending cap (1); 5 entries a second.
    s = env.settings.model_copy(update={"history_maxlen": 20, "pending_max": 1,
                                        "replay_rate_per_s": 5.0})  # fmt: skip
    async with running_router(s) as router:
        await wait_ready(router.port)
        watcher = await Client.open(router.port, env.token("loop"))
        ids = [env.produce(notification("batch_processing_started", "loop", i)) for i in range(20)]
        env.flush()
        await watcher.collect(20)  # recorded
        await watcher.close()
        loop_token, url = env.token("loop"), f"ws://127.0.0.1:{router.port}/ws"
        # Two whole replays: the first within the budget, the second into debt.
        for _ in range(2):
            c = await Client.open(router.port, loop_token, resume="0-0")
            assert [f["id"] for f in c.notifications()] == ids
            await c.close()
        # Reconnecting again is refused before anything is read, saying when to come back.
        ws = await connect(url)
        await ws.send(json.dumps({"type": "auth", "token": loop_token, "resume": "0-0"}))
        frames: list[dict[str, object]] = []
        code, reason = await _closed_with(ws, frames=frames)
        assert code == 1013 and reason.startswith("this teacher's connections replayed too much")
        assert not [f for f in frames if f.get("type") == "notification"]
        wait_s = int(reason.rsplit(" ", 2)[1])
        assert 1 <= wait_s <= 4  # (1 + 19) / 5, less the time since
        # Another teacher connects and is served live meanwhile.
        other = await Client.open(router.port, env.token("bystander"), resume="0-0")
        live = env.produce(notification("batch_processing_started", "bystander", 1))
        env.flush()
        assert [f["id"] for f in await other.collect(1)] == [live]
        await other.close()
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{router.port}/metrics")).text
        assert 'outbox_router_connections_rejected_total{reason="replay_budget"} 1.0' in metrics
        # After the wait it named, a connection is admitted again. A resume frame
        # is priced first, counting no further than the budget allows: refused.
        await asyncio.sleep(wait_s + 0.2)
        priced = await Client.open(router.port, loop_token)
        await priced.ws.send(json.dumps({"type": "resume", "position": "0-0"}))
        err = await priced.until(lambda f: f["type"] == "error")
        m = re.search(r"would replay more than (\d+) notifications", str(err["message"]))
        assert err["code"] == "rate_limited" and m and int(m.group(1)) < 20, err
        await priced.close()
        # The count itself stops at the limit it is given (XRANGE ... COUNT).
        client = aioredis.Redis.from_url(env.stack.redis_url)
        store = Store(client, prefix=s.redis_prefix, dedupe_ttl_s=60, history_maxlen=20,
                      history_ttl_s=60)  # fmt: skip
        try:
            assert await store.replay_count("loop", "0-0", 3) == 3
            assert await store.replay_count("loop", "0-0", 1000) == 20
        finally:
            await client.aclose()
            await store.aclose()
        # A sync on connect that starts is served whole.
        again = await Client.open(router.port, loop_token, resume="0-0")
        assert [f["id"] for f in again.notifications()] == ids
        await again.close()


async def test_connections_that_vanish_mid_sync_give_their_slots_back(any_env: Env) -> None:
    env = any_env  # one Redis, a cluster, interest and sharded fan-out
    # Clients that send their auth (resuming the whole history) and drop the
    # TCP connection at once: the connection's tasks are cancelled while its
    # sync's Redis calls are in flight. A cancellation lost there (Python
    # 3.11's wait_for, inside redis-py, returns a result that completed in the
    # same turn) kept the session's tasks waiting forever: the teacher's
    # slots stayed taken until the router restarted.
    s = env.settings.model_copy(update={"replay_rate_per_s": 1e9})
    async with running_router(s) as router:
        await wait_ready(router.port)
        seeder = await Client.open(router.port, env.token("vanish"))
        for i in range(200):
            env.produce(notification("batch_processing_started", "vanish", i))
        env.flush()
        await seeder.collect(200)  # recorded
        await seeder.close()
        token, url = env.token("vanish"), f"ws://127.0.0.1:{router.port}/ws"
        auth = json.dumps({"type": "auth", "token": token, "resume": "0-0"})
        end = asyncio.get_running_loop().time() + 3
        vanished = 0

        async def vanish() -> None:
            nonlocal vanished
            while asyncio.get_running_loop().time() < end:
                ws = await connect(url, ping_interval=None)
                await ws.send(auth)
                ws.transport.abort()
                vanished += 1
                await asyncio.sleep(0.001)

        await asyncio.gather(*(vanish() for _ in range(s.max_connections_per_teacher)))
        registry = router.hub.registry
        for _ in range(50):
            if registry.count("vanish") == 0:
                break
            await asyncio.sleep(0.1)
        assert vanished > 100
        assert registry.count("vanish") == 0, f"{registry.count('vanish')} slots still held"
        # The teacher's every slot is free again.
        back = [await Client.open(router.port, token)
                for _ in range(s.max_connections_per_teacher)]  # fmt: skip
        for c in back:
            await c.close()


async def test_a_resume_from_the_largest_position_replays_nothing(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    # The largest position Redis can hold: nothing can come after it, and
    # Redis refuses an exclusive range from it ("invalid start ID"), which
    # closed the connection 1011 with a traceback, again on each reconnect.
    caplog.set_level(logging.INFO)
    last = f"{2**64 - 1}-{2**64 - 1}"
    async with running_router(env.settings) as router:
        await wait_ready(router.port)
        seeder = await Client.open(router.port, env.token("far"))
        env.produce(notification("batch_processing_started", "far", 1))
        env.flush()
        await seeder.collect(1)
        await seeder.close()
        for teacher in ("far", "far-without-history"):
            c = await Client.open(router.port, env.token(teacher), resume=last)
            assert c.notifications() == []
            await c.ws.send(json.dumps({"type": "resume", "position": last}))
            syncs = 0

            def second_sync(f: dict[str, object]) -> bool:
                nonlocal syncs
                syncs += f["type"] == "replay_done"
                return syncs == 2

            await c.until(second_sync)  # the first one is among the frames Client.open read
            assert not [f for f in c.frames if f["type"] == "error"], c.frames
            await c.close()
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records
                                                            if r.exc_info]  # fmt: skip


async def test_bad_sub_is_refused_with_one_log_line(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_router(env.settings) as router:
        ws = await connect(f"ws://127.0.0.1:{router.port}/ws")
        await ws.send(json.dumps({"type": "auth", "token": env.token("t1\nINFO conn forged")}))
        assert await _closed_with(ws) == (4401, "token's sub claim is not a valid teacher id")
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0].getMessage() and lines[0].exc_info is None
    assert not any("forged" in r.getMessage() for r in caplog.records)


async def test_out_of_file_descriptors_logs_once_and_keeps_serving(
    env: Env, tmp_path: Path
) -> None:
    s = router_settings(env.stack, env.unique, topic=env.topic)
    proc = start_router_process(s, tmp_path, limit_fds=96)
    socks: list[socket.socket] = []
    try:
        await wait_ready(proc.port)
        c = await Client.open(proc.port, env.token("fd-teacher"))
        for _ in range(200):  # more than the process has descriptors for
            sk = socket.socket()
            sk.setblocking(False)
            sk.connect_ex(("127.0.0.1", proc.port))
            socks.append(sk)
        await asyncio.sleep(3)
        env.produce(notification("class_created", "fd-teacher", 1))
        env.flush()
        await c.collect(1, timeout=30)
        await c.close()
    finally:
        for sk in socks:
            sk.close()
        proc.stop()
    log = proc.log.read_text()
    assert log.count("out of file descriptors") == 1, log[-3000:]
    assert "Traceback" not in log
