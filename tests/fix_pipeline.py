"""pytest plugin: the whole pipeline for end-to-end tests (one per test module):
a database of its own, the relay's connector config, and a router process."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from contracts import CATALOG
from contracts.catalog import DeadlineRule, requires_batch_id, requires_class_id
from relay.settings import RelaySettings
from router.settings import RouterSettings
from stack.state import StackState
from tests.fix_kafka import (
    ConnectorHandle,
    create_topic,
    delete_connector,
    relay_settings_for,
    start_connector,
)
from tests.fix_router import RouterProcess, router_settings, start_router_process
from tests.fix_stack import Database

DOMAIN_SQL = (
    "CREATE TABLE IF NOT EXISTS classes (id text PRIMARY KEY, teacher_id text NOT NULL, name text)"
)


@dataclass
class Pipeline:
    stack: StackState
    db: Database
    relay: RelaySettings
    connector: ConnectorHandle
    router_settings: RouterSettings
    router: RouterProcess
    log_dir: Path

    def restart_router(self) -> RouterProcess:
        self.router.stop()
        self.router = start_router_process(
            self.router_settings, self.log_dir, port=self.router.port
        )
        return self.router

    def service_commit(self, conn: psycopg.Connection[Any], teacher: str, t: str, i: int,
                       *, rollback: bool = False, payload: dict[str, Any] | None = None) -> str:  # fmt: skip
        """A service-style transaction: a domain change and its notification together."""
        entry = CATALOG[t]
        if payload is None:
            payload = {"i": i, "text": f"step {i}", "nested": {"ok": True, "list": [1, 2]}}
        with conn.transaction(force_rollback=rollback):
            conn.execute("INSERT INTO classes (id, teacher_id, name) VALUES (%s, %s, %s)",
                         (f"{teacher}-{t}-{i}", teacher, t))  # fmt: skip
            row = conn.execute(
                "SELECT outbox.notify_teacher(%s, %s, %s, %s, %s, %s, "
                "CASE WHEN %s THEN clock_timestamp() + interval '3 hours' END)",
                (teacher, t, Jsonb(payload),
                 f"corr-{i}", "b-1" if requires_batch_id(t) else None,
                 "c-1" if requires_class_id(t) else None,
                 entry.deadline is DeadlineRule.REQUIRED and entry.default_deadline is None),
            ).fetchone()  # fmt: skip
        assert row is not None
        return str(row[0])


@pytest.fixture(scope="module")
def pipeline(stack: StackState, module_db: Database) -> Iterator[Pipeline]:
    import uuid

    unique = uuid.uuid4().hex[:10]
    with psycopg.connect(module_db.dsn, autocommit=True) as conn:
        conn.execute(DOMAIN_SQL)
    relay = relay_settings_for(stack, module_db, unique)
    connector = start_connector(relay, partitions=3)
    rs = router_settings(stack, unique, topic=relay.topic)
    create_topic(stack.kafka_bootstrap, rs.dlq_topic, 1)
    log_dir = Path(tempfile.mkdtemp(prefix="outbox-e2e-"))
    router = start_router_process(rs, log_dir)
    p = Pipeline(stack, module_db, relay, connector, rs, router, log_dir)
    try:
        yield p
    finally:
        p.router.stop()
        delete_connector(connector.settings)
        import shutil

        import redis

        r = redis.Redis.from_url(stack.redis_url)
        keys = list(r.scan_iter(f"{rs.redis_prefix}:*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()

        shutil.rmtree(log_dir, ignore_errors=True)
