"""The whole real pipeline: Postgres -> Debezium in Connect -> broker -> router -> Redis -> WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import datetime

import psycopg
import pytest

from contracts import CATALOG, TeacherNotificationRequestedV1
from router.auth import mint
from stack.manager import StackManager
from stack.settings import StackSettings
from tests.fix_pipeline import Pipeline
from tests.fix_router import SECRET, Client, wait_ready

pytestmark = pytest.mark.e2e


def tok(teacher: str) -> str:
    return mint(SECRET, teacher, 3600, now=time.time())


async def test_every_type_reaches_its_teacher_intact_and_nobody_else(pipeline: Pipeline) -> None:
    await wait_ready(pipeline.router.port, 60)
    port = pipeline.router.port
    mine = await Client.open(port, tok("e2e-alice"))
    other = await Client.open(port, tok("e2e-bob"))
    sent: dict[str, dict[str, object]] = {}
    with psycopg.connect(pipeline.db.dsn, autocommit=True) as conn:
        for i, t in enumerate(sorted(CATALOG)):
            eid = await asyncio.to_thread(pipeline.service_commit, conn, "e2e-alice", t, i)
            row = conn.execute(
                "SELECT payload FROM outbox.teacher_notifications WHERE id = %s", (eid,)
            ).fetchone()
            assert row is not None
            sent[eid] = row[0]
    frames = await mine.collect(len(sent), timeout=60)
    await other.quiet(1.0)
    assert other.notifications() == []
    got = {f["id"]: f for f in frames if not f["pending"]}
    assert set(got) == set(sent)
    for eid, stored in sent.items():
        n = got[eid]["notification"]
        assert TeacherNotificationRequestedV1.model_validate(
            n
        ) == TeacherNotificationRequestedV1.model_validate(stored)
        assert n["payload"] == {"i": n["payload"]["i"], "text": n["payload"]["text"],
                                "nested": {"ok": True, "list": [1, 2]}}  # fmt: skip
        # The row's timestamp, as Debezium writes the header, is passed on.
        assert datetime.fromisoformat(got[eid]["created_at"]).tzinfo is not None
    await mine.close()
    await other.close()


async def test_rolled_back_notification_never_arrives(pipeline: Pipeline) -> None:
    await wait_ready(pipeline.router.port, 60)
    c = await Client.open(pipeline.router.port, tok("e2e-carol"))
    with psycopg.connect(pipeline.db.dsn, autocommit=True) as conn:
        rolled = await asyncio.to_thread(
            pipeline.service_commit, conn, "e2e-carol", "class_created", 1, rollback=True
        )
        kept = await asyncio.to_thread(
            pipeline.service_commit, conn, "e2e-carol", "class_created", 2
        )
    await c.collect(1, timeout=30)
    await c.quiet(2.0)
    assert [f["id"] for f in c.notifications()] == [kept]
    assert rolled != kept
    await c.close()


async def _burst(pipeline: Pipeline, teachers: list[str], total: int, *,
                 midway: object = None) -> dict[str, list[str]]:  # fmt: skip
    """Commit ``total`` notifications round-robin; call ``midway()`` halfway."""
    order: dict[str, list[str]] = {t: [] for t in teachers}

    def commit_all() -> None:
        with psycopg.connect(pipeline.db.dsn) as conn:
            for i in range(total):
                t = teachers[i % len(teachers)]
                row = conn.execute("SELECT outbox.notify_teacher(%s, 'batch_processing_started', %s::jsonb, %s, 'b')",
                                   (t, json.dumps({"i": i}), f"c{i}")).fetchone()  # fmt: skip
                conn.commit()
                assert row is not None
                order[t].append(str(row[0]))
                if i == total // 2 and midway is not None:
                    midway()  # type: ignore[operator]

    await asyncio.to_thread(commit_all)
    return order


async def test_per_teacher_order_equals_commit_order(pipeline: Pipeline) -> None:
    await wait_ready(pipeline.router.port, 60)
    teachers = [f"e2e-order-{i}" for i in range(50)]
    clients = {t: await Client.open(pipeline.router.port, tok(t)) for t in teachers}
    order = await _burst(pipeline, teachers, 1000)
    for t, c in clients.items():
        await c.collect(len(order[t]), timeout=60)
    for t, c in clients.items():
        await c.quiet(0.05)
        assert [f["id"] for f in c.notifications()] == order[t], t
        await c.close()


async def test_kill9_connect_mid_burst_every_notification_exactly_once(pipeline: Pipeline) -> None:
    await wait_ready(pipeline.router.port, 60)
    teachers = [f"e2e-kc-{i}" for i in range(5)]
    clients = {t: await Client.open(pipeline.router.port, tok(t)) for t in teachers}
    connect_pid = pipeline.stack.component("connect").pid

    def kill() -> None:
        os.kill(connect_pid, signal.SIGKILL)

    order = await _burst(pipeline, teachers, 1500, midway=kill)
    manager = StackManager(
        StackSettings(), state_dir=__import__("pathlib").Path(pipeline.stack.state_dir)
    )
    await asyncio.to_thread(manager.restart_connect, pipeline.stack)
    for t, c in clients.items():
        await c.collect(len(order[t]), timeout=120)
    await asyncio.sleep(2)
    for t, c in clients.items():
        await c.quiet(0.2)
        ids = [f["id"] for f in c.notifications()]
        assert ids == order[t], f"{t}: {len(ids)} frames for {len(order[t])} commits"
        await c.close()


async def test_kill9_router_mid_burst_resumed_clients_get_each_once(pipeline: Pipeline) -> None:
    await wait_ready(pipeline.router.port, 60)
    teachers = [f"e2e-kr-{i}" for i in range(5)]
    clients = {t: await Client.open(pipeline.router.port, tok(t)) for t in teachers}
    order = await _burst(pipeline, teachers, 600, midway=pipeline.router.kill9)
    router = pipeline.restart_router()
    await wait_ready(router.port, 90)
    resumed = {}
    for t, c in clients.items():
        resumed[t] = await Client.open(router.port, tok(t), resume=c.position)
    for t in teachers:
        before = [f["id"] for f in clients[t].notifications()]
        try:
            await resumed[t].collect(len(order[t]) - len(before), timeout=90)
        except AssertionError:
            after = [f["id"] for f in resumed[t].notifications()]
            missing = [e for e in order[t] if e not in before + after]
            raise AssertionError(
                f"{t}: before={len(before)} after={len(after)} want={len(order[t])} "
                f"missing={missing[:3]} frames={resumed[t].frames[:2]} "
                f"log={pipeline.router.log.read_text()[-1500:]}"
            ) from None
        await resumed[t].quiet(0.3)
        after = [f["id"] for f in resumed[t].notifications()]
        assert before + after == order[t], t
        await resumed[t].close()
