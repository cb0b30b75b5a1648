"""pytest plugin: Kafka topics, consumers and Debezium connectors for tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from relay.connector_config import render
from relay.settings import RelaySettings
from relay.topics import ensure_topic, ensure_topics
from stack.state import StackState
from tests.fix_stack import Database


def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    ensure_topic(bootstrap, name, partitions)


def make_consumer(bootstrap: str, topic: str) -> Consumer:
    """A consumer of every partition of ``topic`` from the start. Assigned, not
    subscribed: no group to join (the dev broker holds a join for half the
    session timeout), so it reads at once."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False})  # fmt: skip
    tm = c.list_topics(topic, timeout=10).topics[topic]
    assert tm.error is None and tm.partitions, f"topic {topic} has no partitions: {tm.error}"
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in tm.partitions])
    return c


def consume(consumer: Consumer, n: int, timeout: float = 30.0) -> list[Message]:
    """Read until ``n`` messages arrived or ``timeout`` passed."""
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=500, timeout=0.2):
            if m.error() is None:
                out.append(m)
    return out


@dataclass
class ConnectorHandle:
    name: str
    topic: str
    settings: RelaySettings
    config: dict[str, str]
    connect_url: str
    extra: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        r = httpx.get(f"{self.connect_url}/connectors/{self.name}/status", timeout=5)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def wait_running(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.status()
                tasks = last.get("tasks", [])
                if (
                    last["connector"]["state"] == "RUNNING"
                    and tasks
                    and all(t["state"] == "RUNNING" for t in tasks)
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"connector {self.name} not RUNNING: {last}")


def relay_settings_for(stack: StackState, db: Database, unique: str, **kw: Any) -> RelaySettings:
    base: dict[str, Any] = {
        "pg_dsn": db.dsn,
        "connect_url": stack.connect_url,
        "kafka_bootstrap": stack.kafka_bootstrap,
        "topic": f"test.{unique}.notifications",
        "connector_name": f"test-{unique}",
        "topic_prefix": f"p{unique}",
        "slot_name": f"slot_{unique}",
        "heartbeat_interval_ms": 1000,
    }
    base.update(kw)
    return RelaySettings(**base)


def relay_env(settings: RelaySettings) -> dict[str, str]:
    """This environment plus ``settings`` as OUTBOX_* variables, for CLI processes."""
    import os

    e = dict(os.environ)
    for k, v in settings.model_dump(mode="json").items():
        if v is not None and not isinstance(v, dict):
            e[f"OUTBOX_{k.upper()}"] = str(v)
    return e


def start_connector(settings: RelaySettings, partitions: int = 3) -> ConnectorHandle:
    create_topic(settings.kafka_bootstrap, settings.topic, partitions)
    ensure_topics(settings.kafka_bootstrap, settings.topic, partitions)  # the domain topics
    config = render(settings)
    r = httpx.put(
        f"{settings.connect_url}/connectors/{settings.connector_name}/config",
        json=config,
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    h = ConnectorHandle(
        settings.connector_name, settings.topic, settings, config, settings.connect_url
    )
    h.wait_running()
    return h


def delete_connector(settings: RelaySettings, connect_url: str | None = None) -> None:
    """Delete the connector and wait until its task let go of the slot. Dropping
    the test's database under a running task sends Debezium into a 10 s retry
    sleep, and Connect then waits 5 s for that task to stop, blocking every
    other connector's rebalance."""
    url = connect_url or settings.connect_url.split(",")[0]
    httpx.delete(f"{url}/connectors/{settings.connector_name}", timeout=30)
    deadline = time.monotonic() + 20
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                               (settings.slot_name,)).fetchone()  # fmt: skip
            if row is None or row[0] is None:
                return
            time.sleep(0.1)


@pytest.fixture
def connector(stack: StackState, db: Database, unique: str) -> Iterator[ConnectorHandle]:
    """A Debezium connector on the test's own database, slot and topic."""
    settings = relay_settings_for(stack, db, unique)
    h = start_connector(settings)
    try:
        yield h
    finally:
        delete_connector(settings)


def notify(dsn: str, n: int, teacher: str = "t-r") -> None:
    with psycopg.connect(dsn) as conn:
        for i in range(n):
            conn.execute("SELECT outbox.notify_teacher(%s, 'class_created', %s::jsonb, 'c', NULL, 'k')",
                         (teacher, json.dumps({"i": i})))  # fmt: skip
        conn.commit()


async def wait_for(pred: Any, timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await pred()
        if v:
            return v
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")
