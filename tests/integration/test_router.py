"""The router against the real broker and Redis, with real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from contracts import CATALOG
from router.app import Router
from tests.fix_kafka import consume, create_topic, make_consumer
from tests.fix_router import Client, Env, notification, running_router, wait_ready


async def test_delivers_only_to_own_teacher_and_deduplicates(any_env: Env) -> None:
    env = any_env
    async with running_router(env.settings) as router:
        await wait_ready(router.port)
        a = await Client.open(router.port, env.token("alice"))
        b = await Client.open(router.port, env.token("bob"), header=True)
        # non-ASCII text survives Redis and the fan-out byte for byte
        n = notification("class_created", "alice", 1, title='Åsa\'s klass 🎉 \u2028 "q"')
        eid = env.produce(n)
        env.produce(n, eid)  # the same event again (at-least-once CDC)
        env.produce(notification("batch_processing_started", "alice", 2))
        env.flush()
        got = await a.collect(2)
        await a.quiet(1.0)
        await b.quiet(0.2)
        assert [f["notification"]["payload"]["i"] for f in a.notifications()] == [1, 2]
        assert a.notifications()[0]["id"] == eid
        assert a.notifications()[0]["notification"] == json.loads(n.to_json())
        assert b.notifications() == []
        assert got[0]["position"] < got[1]["position"] or len(got[0]["position"]) < len(
            got[1]["position"]
        )
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{router.port}/metrics")).text
        assert "outbox_router_deduplicated_total 1.0" in metrics
        assert "outbox_router_delivered_total 2.0" in metrics
        assert "outbox_router_kafka_to_frame_seconds_count 2.0" in metrics
        await a.close()
        await b.close()


async def test_poison_messages_are_dead_lettered_and_next_good_arrives(env: Env) -> None:
    dlq = make_consumer(env.stack.kafka_bootstrap, env.settings.dlq_topic)
    try:
        async with running_router(env.settings) as router:
            await wait_ready(router.port)
            c = await Client.open(router.port, env.token("carol"))
            env.produce(b"{not json", key="carol")
            bad = json.loads(notification("class_created", "carol").to_json())
            bad["notification_type"] = "no_such_type"
            env.produce(json.dumps(bad).encode(), key="carol")
            wrong = json.loads(notification("class_created", "carol").to_json())
            wrong["priority"] = "critical"
            env.produce(json.dumps(wrong).encode(), key="carol")
            env.produce(notification("class_created", "carol").to_json().encode(), headers=[])
            good = env.produce(notification("class_created", "carol", 7))
            env.flush()
            # the good record may be routed before the poison ones are read:
            # collect the dead letters while the router still runs
            dead = await asyncio.to_thread(consume, dlq, 4, 30)
            await c.collect(1)
            assert [f["id"] for f in c.notifications()] == [good]
            await c.close()
    finally:
        dlq.close()
    reasons = sorted(dict(m.headers())["dlq.reason"] for m in dead)
    assert reasons == sorted([b"invalid_json", b"unknown_type", b"schema", b"missing_id"])
    # Records of one key share a partition, so their dead letters keep their order
    # (the missing-id record has another key: no order across partitions).
    carol = [m for m in dead if m.key() == b"carol"]
    assert [dict(m.headers())["dlq.reason"] for m in carol] == [
        b"invalid_json", b"unknown_type", b"schema"
    ]  # fmt: skip
    first = dict(carol[0].headers())
    assert carol[0].value() == b"{not json"
    assert first["dlq.source.topic"] == env.topic.encode()
    assert int(first["dlq.source.offset"]) >= 0


async def test_resume_replays_missed_in_order_without_duplicates(any_env: Env) -> None:
    env = any_env
    async with running_router(env.settings) as router:
        await wait_ready(router.port)
        c = await Client.open(router.port, env.token("dave"))
        for i in range(3):
            env.produce(notification("batch_files_uploaded", "dave", i))
        env.flush()
        await c.collect(3)
        pos = c.position
        await c.close()
        for i in range(3, 8):
            env.produce(notification("batch_files_uploaded", "dave", i))
        env.flush()
        await asyncio.sleep(1.5)
        r = await Client.open(router.port, env.token("dave"), resume=pos)
        # live ones while the replay is going on
        for i in range(8, 10):
            env.produce(notification("batch_files_uploaded", "dave", i))
        env.flush()
        got = await r.collect(7)
        await r.quiet(0.5)
        assert [f["notification"]["payload"]["i"] for f in r.notifications()] == list(range(3, 10))
        done = next(f for f in r.frames if f["type"] == "replay_done")
        assert done["recovered"] is True
        assert all(f["replayed"] for f in got[:5])
        await r.close()


async def test_resume_older_than_history_says_not_recovered(any_env: Env) -> None:
    env = any_env
    s = env.settings.model_copy(update={"history_maxlen": 10})
    async with running_router(s) as router:
        await wait_ready(router.port)
        c = await Client.open(router.port, env.token("erin"))
        env.produce(notification("class_created", "erin", 0))
        env.flush()
        await c.collect(1)
        pos = c.position
        await c.close()
        for i in range(1, 400):
            env.produce(notification("class_created", "erin", i))
        env.flush()
        await asyncio.sleep(3)
        r = await Client.open(router.port, env.token("erin"), resume=pos)
        done = await r.until(lambda f: f["type"] == "replay_done")
        assert done["recovered"] is False
        await r.close()


async def test_two_replicas_fan_out_and_ack_clears_pending_everywhere(any_env: Env) -> None:
    env = any_env
    s2 = env.settings.model_copy(update={"router_port": 0})
    async with running_router(env.settings) as r1, running_router(s2) as r2:
        await wait_ready(r1.port)
        on1 = await Client.open(r1.port, env.token("fay"))
        on2 = await Client.open(r2.port, env.token("fay"))
        items = [notification("student_matching_confirmation_required", "fay", i) for i in range(6)]
        ids = [env.produce(n) for n in items]
        env.flush()
        await on1.collect(6)
        await on2.collect(6)
        assert {f["id"] for f in on1.notifications()} == set(ids)
        assert {f["id"] for f in on2.notifications()} == set(ids)
        # a new connection first gets the pending action items
        fresh = await Client.open(r2.port, env.token("fay"))
        assert {f["id"] for f in fresh.notifications() if f["pending"]} == set(ids)
        await on1.ws.send(json.dumps({"type": "ack", "id": ids[0]}))
        await on2.until(lambda f: f["type"] == "acked" and f["id"] == ids[0])
        await fresh.until(lambda f: f["type"] == "acked" and f["id"] == ids[0])
        later = await Client.open(r1.port, env.token("fay"))
        assert {f["id"] for f in later.notifications() if f["pending"]} == set(ids[1:])
        for c in (on1, on2, fresh, later):
            await c.close()


async def _shard_subscribers(redis: Any, channel: str) -> int:
    reply = await redis.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


async def _serves(router: Router, teacher: str) -> bool:
    """Whether Redis knows ``router`` serves ``teacher``: its lease (interest
    fan-out) or its subscription to the teacher's channel (sharded)."""
    if router.s.fanout == "sharded":
        return await _shard_subscribers(router.redis, router.store.teacher_channel(teacher)) == 1
    assert router.replica_id is not None
    leases = await router.redis.zrange(router.store.replicas_key(teacher), 0, -1)
    return bool(leases == [router.replica_id.encode()])


@pytest.mark.parametrize("fanout", ["interest", "sharded"])
async def test_by_interest_a_replica_receives_only_its_teachers(env: Env, fanout: str) -> None:
    """Two replicas, each with its own teachers (interest fan-out on one Redis:
    leases, one message per replica per batch; sharded: a subscription per
    teacher): each receives the records of its teachers only; a teacher who
    leaves is withdrawn or unsubscribed; one who connects while notifications
    flow gets every one after its sync, in order, none twice."""
    s1 = env.settings.model_copy(update={"fanout": fanout})
    s2 = s1.model_copy(update={"router_port": 0})
    async with running_router(s1) as r1, running_router(s2) as r2:
        await wait_ready(r1.port)
        ada = await Client.open(r1.port, env.token("ada"))
        bo = await Client.open(r2.port, env.token("bo"))
        for i in range(20):
            env.produce(notification("batch_files_uploaded", "ada", i))
            env.produce(notification("batch_files_uploaded", "bo", i))
        env.flush()
        await ada.collect(20)
        await bo.collect(20)
        await ada.quiet(0.3)
        assert r1.metrics.fanout_received.value == 20
        assert r2.metrics.fanout_received.value == 20
        assert {f["notification"]["teacher_id"] for f in ada.notifications()} == {"ada"}
        assert r1.interest is not None and r1.interest.teachers == 1
        assert await _serves(r2, "bo")
        await bo.close()
        for _ in range(50):  # the withdrawal goes out in the next round
            if not await _serves(r2, "bo"):
                break
            await asyncio.sleep(0.05)
        assert not await _serves(r2, "bo")
        assert r2.interest is not None and r2.interest.teachers == 0
        # a new teacher while ada's keep coming: no gap, no duplicate
        sent = []
        for i in range(20, 60):
            env.produce(notification("batch_files_uploaded", "ada", i))
            sent.append(env.produce(notification("class_created", "cy", i)))
            if i == 30:
                env.flush()
                cy = await Client.open(r2.port, env.token("cy"), resume="0-0")
        env.flush()
        await cy.collect(len(sent))
        await cy.quiet(0.5)
        assert [f["id"] for f in cy.notifications()] == sent  # in order, once each
        await ada.collect(60)
        assert r1.metrics.fanout_received.value == 60  # ada's only: none of cy's or bo's
        await ada.close()
        await cy.close()


async def test_connections_syncing_at_once_wait_for_a_bounded_pool(env: Env) -> None:
    """120 teachers connect at once to a router allowed 16 Redis connections (8
    for the connections' calls): their syncs take turns instead of failing.
    redis-py raises rather than waits beyond its pool's bound, so every one
    getting its notification shows the calls waited."""
    s = env.settings.model_copy(update={"redis_max_connections": 16})
    teachers = [f"m{i}" for i in range(120)]
    async with running_router(s) as router:
        await wait_ready(router.port)
        clients = await asyncio.gather(*(Client.open(router.port, env.token(t)) for t in teachers))
        sent = {t: env.produce(notification("class_created", t, 0)) for t in teachers}
        env.flush()
        for t, c in zip(teachers, clients, strict=True):
            await c.collect(1)
            assert [f["id"] for f in c.notifications()] == [sent[t]]
        await asyncio.gather(*(c.close() for c in clients))


@pytest.mark.parametrize("fanout", ["broadcast", "interest", "sharded"])
async def test_every_call_on_a_resp3_url(env: Env, fanout: str) -> None:
    """``OUTBOX_REDIS_URL`` may ask for RESP3 (``?protocol=3``), whose replies
    have other shapes (maps, push frames). Every call a connection makes still
    works: live delivery, pending on connect, ack, replay on resume. The sharded
    fan-out reads its node connections itself and forces RESP2 there (under
    RESP3 its subscription confirmations would be push frames the connection
    never returns)."""
    s = env.settings.model_copy(update={"fanout": fanout,
                                        "redis_url": env.settings.redis_url + "?protocol=3"})  # fmt: skip
    async with running_router(s) as router:
        await wait_ready(router.port)
        ada = await Client.open(router.port, env.token("ada"))
        sent = [env.produce(notification("batch_files_uploaded", "ada", i)) for i in range(3)]
        crit = env.produce(notification("student_matching_deadline_approaching", "ada", 3))
        imm = env.produce(notification("batch_file_corrupted", "ada", 4))
        env.flush()
        await ada.collect(5)
        await ada.quiet(0.2)
        assert [f["id"] for f in ada.notifications()] == [*sent, crit, imm]
        pos = ada.notifications()[0]["position"]
        await ada.ws.send(json.dumps({"type": "ack", "id": imm}))
        await asyncio.sleep(0.5)
        await ada.close()
        # the pending one not acknowledged first, then the replay after pos
        # (without what was just sent as pending)
        again = await Client.open(router.port, env.token("ada"), resume=pos)
        await again.collect(4)
        await again.quiet(0.2)
        assert [f["id"] for f in again.notifications() if f["pending"]] == [crit]
        assert [f["id"] for f in again.notifications() if f["replayed"]] == [*sent[1:], imm]
        done = next(f for f in again.frames if f["type"] == "replay_done")
        assert (done["recovered"], done["replayed"], done["pending"]) == (True, 3, 1)
        await again.close()


async def test_a_batch_over_many_slots_arrives_in_order_per_teacher(any_env: Env) -> None:
    """Teachers spread over every node of a cluster (and ids with braces, which
    must not break the hash tag): each gets its own, in commit order, once."""
    env = any_env
    teachers = [f"t{i}" for i in range(24)] + ["a}b", "{x}", "}{", "{"]
    async with running_router(env.settings) as router:
        await wait_ready(router.port)
        clients = {t: await Client.open(router.port, env.token(t)) for t in teachers}
        for i in range(5):
            for t in teachers:
                env.produce(notification("batch_files_uploaded", t, i))
        env.flush()
        for t, c in clients.items():
            await c.collect(5)
            await c.quiet(0.1)
            assert [f["notification"]["payload"]["i"] for f in c.notifications()] == list(range(5))
            assert {f["notification"]["teacher_id"] for f in c.notifications()} == {t}
            await c.close()


async def test_pending_highest_priority_first(any_env: Env) -> None:
    env = any_env
    async with running_router(env.settings) as router:
        await wait_ready(router.port)
        # Connected first, so it sees all four live (and knows they are recorded).
        watcher = await Client.open(router.port, env.token("gus"))
        low = env.produce(notification("batch_processing_failed", "gus", 1))  # HIGH
        crit = env.produce(notification("student_matching_deadline_approaching", "gus", 2))
        imm = env.produce(notification("batch_file_corrupted", "gus", 3))
        env.produce(notification("class_created", "gus", 4))  # not action-required
        env.flush()
        await watcher.collect(4)
        c = await Client.open(router.port, env.token("gus"))
        assert [f["id"] for f in c.notifications() if f["pending"]] == [crit, imm, low]
        await c.close()
        await watcher.close()


async def _close_of(coro: object) -> tuple[int | None, str]:
    try:
        ws = await coro  # type: ignore[misc]
        await asyncio.wait_for(ws.recv(), 5)
        await asyncio.wait_for(ws.recv(), 5)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("connection stayed open")


async def _auth_then_close(port: int, first: str | bytes, **kw: object) -> tuple[int | None, str]:
    ws = await connect(f"ws://127.0.0.1:{port}/ws", **kw)  # type: ignore[arg-type]
    try:
        await ws.send(first)
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason


async def test_abuse_limits(env: Env) -> None:
    s = env.settings.model_copy(update={"max_connections_per_teacher": 2, "max_frame_bytes": 4096,
                                        "allowed_origins": ["https://app.example"]})  # fmt: skip
    async with running_router(s) as router:
        port = router.port
        tok = env.token("ivy")
        c1 = await Client.open(port, tok)
        c2 = await Client.open(port, tok)
        code, reason = await _auth_then_close(port, json.dumps({"type": "auth", "token": tok}))
        assert code == 4429
        # oversized frame
        code, _ = await _auth_then_close(port, "x" * 10000)
        assert code == 1009
        # malformed frames: error frames, then a policy close
        await c1.ws.send("{nope")
        err = await c1.until(lambda f: f["type"] == "error")
        assert err["code"] == "bad_frame"
        for _ in range(10):
            await c1.ws.send(json.dumps({"type": "bogus"}))
        with pytest.raises(ConnectionClosed) as ei:
            for _ in range(50):
                await c1.until(lambda f: False, timeout=5)
        assert ei.value.rcvd is not None and ei.value.rcvd.code == 1008
        # disallowed Origin is refused at the handshake (HTTP 403)
        from websockets.exceptions import InvalidStatus

        with pytest.raises(InvalidStatus) as hs:
            await connect(f"ws://127.0.0.1:{port}/ws", origin="https://evil.example")  # type: ignore[arg-type]
        assert hs.value.response.status_code == 403
        ok = await Client.open(port, env.token("jon"), origin="https://app.example")  # type: ignore[arg-type]
        await ok.close()
        await c2.close()


async def test_slow_client_is_dropped_without_delaying_others(env: Env) -> None:
    s = env.settings.model_copy(update={"send_queue_max": 20})
    async with running_router(s) as router:
        await wait_ready(router.port)
        port = router.port
        # A client that stops reading, with a small kernel receive buffer: once
        # the kernel and the transport are full, frames queue up and overflow.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        slow = await connect(f"ws://127.0.0.1:{port}/ws", sock=sock, max_size=2**20, max_queue=1)
        await slow.send(json.dumps({"type": "auth", "token": env.token("slow")}))
        slow.transport.pause_reading()
        fast = await Client.open(port, env.token("fast"))
        big = "x" * 30000
        for i in range(300):
            env.produce(notification("class_created", "slow", i, blob=big))
            if i % 30 == 0:
                env.produce(notification("class_created", "fast", i))
        env.flush()
        t0 = time.monotonic()
        await fast.collect(10, timeout=30)
        assert time.monotonic() - t0 < 20
        slow.transport.resume_reading()
        with pytest.raises(ConnectionClosed) as ei:
            while True:
                await asyncio.wait_for(slow.recv(), 20)
        assert ei.value.rcvd is not None and ei.value.rcvd.code == 1013
        await fast.close()


teacher_ids = st.lists(st.sampled_from(["t1", "t2", "t3", "t4"]), min_size=1, max_size=25)


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    recipients=teacher_ids,
    types=st.lists(st.sampled_from(sorted(CATALOG)), min_size=25, max_size=25),
)
async def test_isolation_property(env: Env, recipients: list[str], types: list[str]) -> None:
    """Random teachers and notifications: each client gets exactly its own, in order."""
    run = uuid.uuid4().hex[:6]
    s = env.settings.model_copy(update={"redis_prefix": f"{env.settings.redis_prefix}{run}",
                                        "group_id": f"{env.settings.group_id}{run}"})  # fmt: skip
    async with running_router(s) as router:
        await wait_ready(router.port)
        teachers = [f"{t}-{run}" for t in ("t1", "t2", "t3", "t4")]
        clients = {t: await Client.open(router.port, env.token(t)) for t in teachers}
        sent: dict[str, list[str]] = {t: [] for t in teachers}
        for i, (r, ty) in enumerate(zip(recipients, types, strict=False)):
            t = f"{r}-{run}"
            sent[t].append(env.produce(notification(ty, t, i)))
        env.flush()
        for t, c in clients.items():
            if sent[t]:
                await c.collect(len(sent[t]))
            await c.quiet(0.3)
            got = [f for f in c.notifications() if not f["pending"]]
            assert [f["id"] for f in got] == sent[t]
            assert all(f["notification"]["teacher_id"] == t for f in got)
            await c.close()


async def test_page_and_files_carry_security_headers(env: Env) -> None:
    async with running_router(env.settings) as router:
        base = f"http://127.0.0.1:{router.port}"
        async with httpx.AsyncClient() as http:
            for path in ("/", "/static/app.js", "/static/style.css", "/catalog.json"):
                r = await http.get(base + path)
                assert r.status_code == 200, path
                csp = r.headers["content-security-policy"]
                assert "default-src 'none'" in csp and "script-src 'self'" in csp
                assert "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
                assert f"connect-src 'self' ws://127.0.0.1:{router.port}" in csp
                assert r.headers["referrer-policy"] == "no-referrer"
                assert r.headers["x-content-type-options"] == "nosniff"
                assert r.headers["x-frame-options"] == "DENY"
            # A Host header is never written into the policy unless it is a host.
            r = await http.get(base + "/", headers={"Host": "x; script-src *"})
            assert "script-src *" not in r.headers["content-security-policy"]
            catalog = (await http.get(base + "/catalog.json")).json()
            assert set(catalog["types"]) == set(CATALOG)


async def test_metrics_on_the_admin_port_with_every_series(env: Env) -> None:
    s = env.settings.model_copy(update={"admin_port": 0})
    async with running_router(s) as router:
        await wait_ready(router.port)
        c = await Client.open(router.port, env.token("metrics-t"))
        env.produce(notification("class_created", "metrics-t"))
        env.flush()
        await c.collect(1)
        admin = router.server.admin_port
        assert admin is not None and admin != router.port
        async with httpx.AsyncClient() as http:
            public = await http.get(f"http://127.0.0.1:{router.port}/metrics")
            assert public.status_code == 404  # nothing internal on the public port
            assert (await http.get(f"http://127.0.0.1:{router.port}/readyz")).status_code == 200
            deadline = time.monotonic() + 20
            while True:  # librdkafka reports lag every 5 s
                text = (await http.get(f"http://127.0.0.1:{admin}/metrics")).text
                if "outbox_router_kafka_consumer_lag{" in text or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
        assert "process_cpu_seconds_total" in text and "process_open_fds" in text
        assert 'outbox_router_connections_rejected_total{reason="server_full"} 0.0' in text
        assert 'outbox_router_dead_lettered_total{reason="unknown_type"} 0.0' in text
        assert 'outbox_router_redis_call_seconds_count{call="ingest"}' in text
        assert 'outbox_router_redis_call_seconds_count{call="ingest"} 0.0' not in text
        assert 'outbox_router_kafka_consumer_lag{partition="' in text
        await c.close()


async def test_a_replica_beyond_the_partitions_is_ready_and_delivers(env: Env) -> None:
    """/readyz means "send me connections": Redis and the fan-out, not partitions."""
    topic = f"{env.topic}.one"
    create_topic(env.stack.kafka_bootstrap, topic, 1)
    s = env.settings.model_copy(update={"topic": topic})
    async with running_router(s) as a, running_router(s) as b:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 30
            while True:
                texts = {
                    r.port: (await http.get(f"http://127.0.0.1:{r.port}/readyz")) for r in (a, b)
                }
                owners = [
                    p for p, r in texts.items() if "kafka_assigned ok (1 partitions)" in r.text
                ]
                if len(owners) == 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
        assert len(owners) == 1, {p: r.text for p, r in texts.items()}
        idle = next(p for p in texts if p not in owners)
        assert texts[idle].status_code == 200, texts[idle].text
        assert "kafka_assigned none (serving only)" in texts[idle].text
        c = await Client.open(idle, env.token("beyond"))
        env.producer.produce(topic, value=notification("class_created", "beyond").to_json().encode(),
                             key=b"beyond", headers=[("id", str(uuid.uuid4()).encode())])  # fmt: skip
        env.flush()
        (frame,) = await c.collect(1)
        assert frame["notification"]["teacher_id"] == "beyond"
        await c.close()


async def test_garbage_on_the_fan_out_channel_is_skipped_with_one_log_line(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages on the fan-out channel that are not ours (something else
    publishing under the same prefix) are skipped, one log line a minute, and
    delivery goes on."""
    caplog.set_level(logging.INFO)
    async with running_router(env.settings) as router:
        await wait_ready(router.port)
        c = await Client.open(router.port, env.token("gus"))
        publisher = aioredis.Redis.from_url(env.stack.redis_url)
        try:
            for junk in (b"", b"not json", b"[]", b'[["n","gus"]]', b"\xff" * 10, b"{}") * 50:
                await publisher.publish(router.store.channel, junk)
        finally:
            await publisher.aclose()
        eid = env.produce(notification("batch_processing_started", "gus", 1))
        env.flush()
        assert [f["id"] for f in await c.collect(1)] == [eid]
        await c.close()
    lines = [r.getMessage() for r in caplog.records if "malformed fan-out" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "OUTBOX_REDIS_PREFIX" in lines[0]
