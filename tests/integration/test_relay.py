"""The relay against the real stack: apply, supervise, recover, slot health, janitor, doctor."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import generate_latest

from contracts.events import publish_event
from relay.apply import apply
from relay.connect_api import ConnectClient
from relay.connector_config import render
from relay.daemon import Relay
from relay.doctor import run_checks
from relay.janitor import Janitor
from relay.settings import RelaySettings
from relay.supervisor import Health
from stack.manager import StackManager
from stack.settings import StackSettings
from stack.state import StackState
from tests.fix_kafka import (
    consume,
    create_topic,
    delete_connector,
    make_consumer,
    notify,
    relay_env,
    relay_settings_for,
    wait_for,
)
from tests.fix_stack import Database


class Counting(httpx.AsyncBaseTransport):
    """A real HTTP transport that counts writes."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.writes: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in ("PUT", "POST", "DELETE"):
            self.writes.append(f"{request.method} {request.url.path}")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def relay_settings(stack: StackState, db: Database, unique: str) -> Any:
    s = relay_settings_for(stack, db, unique, supervise_interval_s=0.5, restart_backoff_initial_s=1,
                           janitor_interval_s=0.5)  # fmt: skip
    create_topic(stack.kafka_bootstrap, s.topic, 3)
    yield s
    delete_connector(s)


async def test_apply_is_idempotent_and_relay_corrects_drift(relay_settings: RelaySettings) -> None:
    s = relay_settings
    t = Counting()
    async with ConnectClient(s.connect_url, transport=t) as c:
        first = await apply(c, s.connector_name, render(s))
        assert first.created and first.applied
        assert ("database.password", None, None) not in first.changes
        second = await apply(c, s.connector_name, render(s))
        assert not second.changed and not second.applied
        assert t.writes == [f"PUT /connectors/{s.connector_name}/config"]
        # an operator edits the live config by hand
        live = await c.get_config(s.connector_name)
        assert live is not None
        live["poll.interval.ms"] = "1000"
        await c.put_config(s.connector_name, live)
    relay = Relay(s)
    try:
        await relay.tick()
        async with ConnectClient(s.connect_url) as c:
            fixed = await c.get_config(s.connector_name)
        assert fixed is not None and fixed["poll.interval.ms"] == "5"
        assert relay.metrics.applies._value.get() == 1
    finally:
        await relay.aclose()


async def test_connector_rows_arrive_with_key_headers_and_json(
    relay_settings: RelaySettings, db: Database
) -> None:
    s = relay_settings
    consumer = make_consumer(s.kafka_bootstrap, s.topic)
    relay = Relay(s)
    try:
        await wait_for(lambda: _healthy(relay), 90)
        with psycopg.connect(db.dsn) as conn:
            eid = conn.execute("SELECT outbox.notify_teacher('teacher-x', 'batch_processing_completed', "
                               "'{\"essays\": 30, \"none\": null}', 'corr-9', 'batch-3')").fetchone()  # fmt: skip
            conn.commit()
        assert eid is not None
        got = await asyncio.to_thread(consume, consumer, 1, 30)
    finally:
        consumer.close()
        await relay.aclose()
    (m,) = got
    assert m.key() == b"teacher-x"
    h = dict(m.headers())
    assert h["id"].decode() == str(eid[0])
    assert h["notification_type"] == b"batch_processing_completed"
    assert h["created_at"].endswith(b"Z")
    v = json.loads(m.value())
    assert v["payload"] == {"essays": 30, "none": None}
    assert v["batch_id"] == "batch-3" and v["class_id"] is None and v["priority"] == "high"


async def _healthy(relay: Relay) -> bool:
    r = await relay.tick()
    return r.health is Health.HEALTHY


async def test_failed_task_is_restarted_once_the_cause_is_gone(
    stack: StackState, db: Database, unique: str
) -> None:
    role = f"cdc_{unique}"
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN REPLICATION IN ROLE outbox_cdc")
    s = relay_settings_for(stack, db, unique, cdc_user=role, supervise_interval_s=0.5,
                           restart_backoff_initial_s=1, restart_backoff_max_s=4, max_restarts=50,
                           restart_stable_after_s=2)  # fmt: skip
    create_topic(stack.kafka_bootstrap, s.topic, 3)
    relay = Relay(s)
    try:
        await wait_for(lambda: _healthy(relay), 90)
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} NOLOGIN")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )

        async def failed() -> bool:
            r = await relay.tick()
            return r.health is Health.DEGRADED and relay.memory.total_restarts >= 1

        await wait_for(failed, 90)
        assert any(
            "not permitted to log in" in d or "FATAL" in d or "task" in d
            for d in relay.report.details
        )
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} LOGIN")
        await wait_for(lambda: _healthy(relay), 120, interval=1)
        assert relay.metrics.restarts._value.get() >= 1

        async def budget_reset() -> bool:
            await relay.tick()
            return relay.memory.restarts == 0  # after 2 s RUNNING unbroken

        await wait_for(budget_reset, 30)
    finally:
        await relay.aclose()
        delete_connector(s)
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} LOGIN")


async def test_pause_grows_lag_and_janitor_deletes_only_shipped(
    relay_settings: RelaySettings, db: Database
) -> None:
    s = relay_settings
    relay = Relay(s)
    janitor = Janitor(s.slot_name, batch=7)
    try:
        await wait_for(lambda: _healthy(relay), 90)
        notify(db.dsn, 20)
        publish_events(db.dsn, 20)

        async def shipped() -> bool:
            async with await psycopg.AsyncConnection.connect(db.dsn, autocommit=True) as conn:
                await janitor.tick(conn)
                row = await (await conn.execute(
                    "SELECT (SELECT count(*) FROM outbox.teacher_notifications), "
                    "(SELECT count(*) FROM outbox.domain_events)")).fetchone()  # fmt: skip
            return row == (0, 0)

        await wait_for(shipped, 60)
        async with ConnectClient(s.connect_url) as c:
            await c.pause(s.connector_name)
        await wait_for(lambda: _paused(relay), 30)
        before = await relay.slot_stats()
        assert before is not None
        notify(db.dsn, 30)
        publish_events(db.dsn, 30)
        with psycopg.connect(db.dsn) as conn:  # WAL traffic that the slot must hold
            conn.execute(
                "CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g"
            )
            conn.commit()
        for _ in range(5):
            async with await psycopg.AsyncConnection.connect(db.dsn, autocommit=True) as conn:
                assert await janitor.tick(conn) == 0
            await asyncio.sleep(0.5)
        after = await relay.slot_stats()
        assert after is not None
        assert after.lag_bytes > before.lag_bytes + 1_000_000
        assert after.backlog == 30
        # nothing unshipped is cleaned from either outbox; the backlog by topic says so
        metrics = generate_latest(relay.metrics.registry).decode()
        assert f'outbox_relay_domain_events_backlog{{topic="{EVENT_TOPIC}"}} 30.0' in metrics
        assert 'outbox_relay_connect_call_seconds_count{method="GET"}' in metrics
        assert 'outbox_relay_connect_call_seconds_count{method="GET"} 0.0' not in metrics
        assert "process_resident_memory_bytes" in metrics
        out = subprocess.run([sys.executable, "-m", "outbox.cli", "relay", "status", "--json"],
                             env=relay_env(s), capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        status = json.loads(out.stdout)
        assert status["health"] == "paused"
        assert status["slot"]["lag_bytes"] >= after.lag_bytes
        async with ConnectClient(s.connect_url) as c:
            await c.resume(s.connector_name)
        await wait_for(shipped, 90)
    finally:
        await relay.aclose()


EVENT_TOPIC = "huleedu.class_management.class.created.v1"


def publish_events(dsn: str, n: int) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for i in range(n):
            publish_event(cur, EVENT_TOPIC, f"class-{i}", "ClassCreated", {"i": i}, f"req-{i}")


async def _paused(relay: Relay) -> bool:
    return (await relay.tick()).health is Health.PAUSED


async def test_doctor_passes_on_the_stack(relay_settings: RelaySettings) -> None:
    checks = await run_checks(relay_settings)
    assert [(c.name, c.detail) for c in checks if not c.ok] == []


async def test_doctor_fails_a_publication_that_publishes_deletes(
    relay_settings: RelaySettings, db: Database
) -> None:
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(
            "ALTER PUBLICATION outbox_publication SET (publish = 'insert, update, delete')"
        )
    checks = {c.name: c for c in await run_checks(relay_settings)}
    ops = checks["publication outbox_publication operations"]
    assert not ops.ok and ops.detail == "publishes deletes or truncates"
    assert "SET (publish = 'insert, update')" in ops.fix
    assert checks["publication outbox_publication"].ok  # its tables are still right


async def test_doctor_fails_clearly_on_wal_level_replica(stack: StackState, unique: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="outbox-doctor-"))
    tmp.chmod(0o755)
    mgr = StackManager(StackSettings(pg_wal_level="replica"), state_dir=tmp)
    try:
        pg = mgr.start_postgres()
        s = RelaySettings(pg_dsn=pg.url, connect_url=stack.connect_url, kafka_bootstrap=stack.kafka_bootstrap,
                          topic=f"doctor.{uuid.uuid4().hex[:6]}")  # fmt: skip
        out = subprocess.run([sys.executable, "-m", "outbox.cli", "doctor"], env=relay_env(s), capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
        assert out.returncode == 1
        assert "[FAIL] wal_level=logical: wal_level is replica" in out.stdout
        assert "fix: set wal_level = logical" in out.stdout
        assert "[FAIL] publication outbox_publication: does not exist" in out.stdout
    finally:
        mgr.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)


def test_apply_wait_returns_once_running_and_status_answers_at_once(
    relay_settings: RelaySettings,
) -> None:
    env = relay_env(relay_settings)

    def outbox(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "outbox.cli", *args], env=env,
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip

    applied = outbox("connector", "apply", "--wait", "--timeout", "120")
    assert applied.returncode == 0, applied.stderr
    assert "created connector" in applied.stdout and "RUNNING" in applied.stdout
    st = outbox("connector", "status", "--json")  # right after: it has a status
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["state"] == "RUNNING"
    again = outbox("connector", "apply", "--wait")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stderr


async def test_the_relay_needs_no_superuser(relay_settings: RelaySettings, db: Database) -> None:
    """Supervision, slot health, the janitor and doctor as outbox_relay (sql/006)."""
    as_relay = db.dsn.replace("postgres@", "outbox_relay@")
    assert as_relay != db.dsn
    s = relay_settings.model_copy(update={"pg_dsn": as_relay})
    relay = Relay(s)
    janitor = Janitor(s.slot_name)
    try:
        await wait_for(lambda: _healthy(relay), 90)
        stats = await relay.slot_stats()
        assert stats is not None and stats.exists
        notify(db.dsn, 5)
        publish_events(db.dsn, 5)

        async def cleaned() -> bool:
            async with await psycopg.AsyncConnection.connect(as_relay, autocommit=True) as conn:
                await janitor.tick(conn)
                row = await (await conn.execute(
                    "SELECT (SELECT count(*) FROM outbox.teacher_notifications), "
                    "(SELECT count(*) FROM outbox.domain_events)")).fetchone()  # fmt: skip
            return row == (0, 0)

        await wait_for(cleaned, 60)
        assert [(c.name, c.detail) for c in await run_checks(s) if not c.ok] == []
        with psycopg.connect(as_relay) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT outbox.notify_teacher('t', 'class_created', '{}', 'c', NULL, 'k')")
    finally:
        await relay.aclose()
