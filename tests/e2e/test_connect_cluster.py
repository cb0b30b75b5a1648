"""A Kafka Connect cluster of two workers: kill -9 the worker running the
Debezium task mid-burst; the task moves to the other worker, the clients get
every notification once, and the relay (talking to both workers) reports the
move."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import psycopg

from relay.daemon import Relay
from relay.topics import ensure_topics
from stack.manager import StackManager
from stack.procs import stop_pid
from stack.settings import StackSettings
from stack.state import StackState
from tests.fix_kafka import create_topic, relay_settings_for
from tests.fix_router import Client, router_settings, running_router, wait_ready
from tests.fix_stack import Database

TOTAL = 800


async def test_kill9_the_worker_running_the_task_moves_it(stack: StackState, db: Database,
                                                          unique: str, tmp_path: Path) -> None:  # fmt: skip
    mgr = StackManager(StackSettings(), state_dir=tmp_path / "connect")
    relay: Relay | None = None
    try:
        workers = await asyncio.to_thread(mgr.start_connect_cluster, stack.kafka_bootstrap, 2,
                                          f"cc-{unique}")  # fmt: skip
        s = relay_settings_for(stack, db, unique, connect_url=",".join(w.url for w in workers))
        create_topic(stack.kafka_bootstrap, s.topic, 3)
        ensure_topics(stack.kafka_bootstrap, s.topic, 3)
        relay = Relay(s)
        deadline = time.monotonic() + 120
        while (await relay.tick()).health.value != "healthy":
            assert time.monotonic() < deadline, relay.report
            await asyncio.sleep(1)
        rs = router_settings(stack, unique, topic=s.topic)
        create_topic(stack.kafka_bootstrap, rs.dlq_topic, 1)
        async with running_router(rs) as router:
            await wait_ready(router.port, 60)
            teachers = [f"cc-{i}" for i in range(4)]
            clients = {t: await Client.open(router.port, rs_token(t)) for t in teachers}
            status = await relay.connect.status(s.connector_name)
            running_on = status.tasks[0].worker_id
            victim = next(w for w in workers if running_on and running_on.endswith(f":{w.port}"))
            order: dict[str, list[str]] = {t: [] for t in teachers}

            def burst() -> None:
                with psycopg.connect(db.dsn) as conn:
                    for i in range(TOTAL):
                        t = teachers[i % len(teachers)]
                        row = conn.execute("SELECT outbox.notify_teacher(%s, 'batch_processing_started', "
                                           "%s::jsonb, %s, 'b')", (t, json.dumps({"i": i}), f"c{i}")).fetchone()  # fmt: skip
                        conn.commit()
                        assert row is not None
                        order[t].append(str(row[0]))
                        if i == TOTAL // 2:
                            stop_pid(
                                victim.pid, expect=victim.expect, sig=signal.SIGKILL, timeout=5
                            )
                        time.sleep(0.002)

            killed = time.monotonic()
            await asyncio.to_thread(burst)
            # the relay keeps supervising through the worker that is left
            moved_at = None
            while moved_at is None and time.monotonic() - killed < 120:
                await relay.tick()
                if relay.metrics.task_moves._value.get() >= 1:
                    moved_at = time.monotonic()
                await asyncio.sleep(1)
            assert moved_at is not None, f"the task did not move: {relay.report}"
            for t, c in clients.items():
                await c.collect(len(order[t]), timeout=120)
                await c.quiet(0.3)
                got = [f["id"] for f in c.notifications()]
                assert got == order[t], t  # every one, once, in commit order
                await c.close()
            print(f"\nconnect cluster: task moved from {running_on} {moved_at - killed:.0f} s "
                  f"after the kill; {TOTAL} sent, 0 lost, 0 duplicated")  # fmt: skip
    finally:
        if relay is not None:
            await relay.connect.delete(s.connector_name)
            await relay.aclose()
        mgr.stop_started()


def rs_token(teacher: str) -> str:
    from router.auth import mint
    from tests.fix_router import SECRET

    return mint(SECRET, teacher, 3600, now=time.time())
