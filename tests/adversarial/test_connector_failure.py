"""A connector task that keeps failing is loud and bounded (real Postgres,
Connect + Debezium, broker): a row too large for a Kafka record, forced past
the validation trigger, fails the task after every restart; the relay gives up
after its budget and says why in its status, /healthz, a metric, a log line,
`outbox relay status` and `outbox doctor`."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

import httpx
import psycopg
import pytest

from relay.daemon import Relay
from relay.doctor import run_checks
from relay.supervisor import Health
from stack.state import StackState
from tests.fix_kafka import delete_connector, relay_env, relay_settings_for, wait_for
from tests.fix_stack import Database

_FORCE_HUGE_ROW = """
ALTER TABLE outbox.teacher_notifications DISABLE TRIGGER teacher_notifications_validate;
INSERT INTO outbox.teacher_notifications (aggregateid, type, payload)
SELECT t, 'class_created', jsonb_build_object('teacher_id', t, 'notification_type', 'class_created',
       'category', 'class_management', 'priority', 'standard', 'payload', '{}'::jsonb,
       'action_required', false, 'correlation_id', 'c', 'class_id', 'k')
FROM (SELECT repeat('t', 1100000) AS t) x;
ALTER TABLE outbox.teacher_notifications ENABLE TRIGGER teacher_notifications_validate;
"""


async def test_a_task_failing_on_every_restart_ends_degraded_with_its_cause(
    stack: StackState, db: Database, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = relay_settings_for(stack, db, unique, relay_http_port=0, supervise_interval_s=0.5,
                           restart_backoff_initial_s=0.5, restart_backoff_max_s=2,
                           max_restarts=2, restart_stable_after_s=30, janitor_enabled=False)  # fmt: skip
    relay = Relay(s)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    caplog.set_level(logging.WARNING, logger="relay.daemon")
    try:
        await wait_for(lambda: _health(relay, Health.HEALTHY), 60)
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(_FORCE_HUGE_ROW)
        await wait_for(lambda: _gave_up(relay), 120, interval=0.5)
        assert not task.done()
        assert relay.report.health is Health.DEGRADED
        assert "RecordTooLargeException" in relay.memory.last_failure
        assert relay.memory.total_restarts == 2
        # It stays degraded: no more restarts, no flip back to healthy.
        await asyncio.sleep(3)
        assert relay.report.health is Health.DEGRADED and relay.memory.total_restarts == 2
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{relay.http_port}/readyz")
            alive = await http.get(f"http://127.0.0.1:{relay.http_port}/healthz")
            metrics = (await http.get(f"http://127.0.0.1:{relay.http_port}/metrics")).text
        assert health.status_code == 503 and alive.status_code == 200
        body = health.json()
        assert body["gave_up"] is True and "RecordTooLargeException" in body["last_failure"]
        assert "outbox_relay_restarts_exhausted 1.0" in metrics
        assert any("gave up after 2 restarts" in r.getMessage() for r in caplog.records)
        env = relay_env(s.model_copy(update={"relay_http_port": relay.http_port}))
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "outbox.cli", "relay", "status", "--json"],
            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 1, out.stderr
        status = json.loads(out.stdout)
        assert status["health"] == "degraded" and status["source"].startswith("relay daemon")
        assert "RecordTooLargeException" in status["last_failure"]
        checks = {c.name: c for c in await run_checks(s)}
        doc = checks[f"connector {s.connector_name}"]
        assert not doc.ok and "RecordTooLargeException" in doc.detail
        assert "dead-letters it" in doc.fix
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        delete_connector(s)


async def _health(relay: Relay, want: Health) -> bool:
    return relay.report.health is want


async def _gave_up(relay: Relay) -> bool:
    return relay.memory.gave_up
