"""Domain events and notifications through one outbox: Postgres -> Debezium in
Connect -> each domain event to its own topic, each notification to its teacher
(and no domain event anywhere near a socket)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from contracts.events import EVENT_TOPICS, EventEnvelope, publish_event
from contracts.projector import DomainEvent, Projector
from router.auth import mint
from tests.fix_pipeline import Pipeline
from tests.fix_router import SECRET, Client, wait_ready

pytestmark = pytest.mark.e2e

TOPICS = sorted(EVENT_TOPICS)[:4]
TEACHER = "dom-teacher"
TRANSACTIONS, EVENTS_PER_TX = 100, 10


@dataclass(frozen=True)
class BatchValidated:
    batch: str
    seq: int
    rejected: int


VALIDATED = DomainEvent[BatchValidated](
    topic="huleedu.file_service.batch.validated.v1",
    event_type="BatchValidated",
    key=lambda e: e.batch,
    data=lambda e: {"batch": e.batch, "seq": e.seq, "rejected": e.rejected},
    correlation_id=lambda e: f"req-{e.seq}",
    projectors=(Projector[BatchValidated](
        notification_type="batch_validation_failed", teacher_id=lambda e: TEACHER,
        payload=lambda e: {"rejected": e.rejected, "batch_name": e.batch},
        correlation_id=lambda e: f"req-{e.seq}", batch_id=lambda e: e.batch,
        when=lambda e: e.rejected > 0),),
)  # fmt: skip


def commit_all(dsn: str, run: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """100 transactions, each with 10 domain events (one of them projected into
    a notification); the events as sent, by id, and the notification ids."""
    sent: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    seq = 0
    with psycopg.connect(dsn) as conn:
        for tx in range(TRANSACTIONS):
            with conn.transaction(), conn.cursor() as cur:
                for j in range(EVENTS_PER_TX):
                    seq += 1
                    key = f"{run}-agg-{seq % 7}"
                    if j == 0:
                        ev = BatchValidated(key, seq, rejected=1 + tx % 3)
                        out = VALIDATED.publish(cur, ev)
                        notes.extend(str(n) for n in out.notification_ids)
                        sent[str(out.event_id)] = {"topic": VALIDATED.topic, "key": key,
                                                   "seq": seq, "type": "BatchValidated",
                                                   "data": VALIDATED.data(ev)}  # fmt: skip
                        continue
                    topic = TOPICS[seq % len(TOPICS)]
                    data = {"seq": seq, "text": "å∑ü", "nested": {"list": [1, 2.5, None]}}
                    eid = publish_event(cur, topic, key, "SomethingHappened", data, f"req-{seq}")
                    sent[str(eid)] = {"topic": topic, "key": key, "seq": seq,
                                      "type": "SomethingHappened", "data": data}  # fmt: skip
    return sent, notes


def consume_events(bootstrap: str, wanted: set[str], timeout: float) -> list[Any]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"dom-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    md = c.list_topics(timeout=10)
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in sorted({*TOPICS, VALIDATED.topic})
              for p in md.topics[t].partitions])  # fmt: skip
    got: list[Any] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not wanted <= seen:
            for m in c.consume(num_messages=500, timeout=0.5):
                if m.error() is not None:
                    continue
                headers = {k: v.decode() for k, v in (m.headers() or [])}
                if headers.get("id") in wanted:
                    got.append(m)
                    seen.add(headers["id"])
        # and a little longer, to catch a second copy
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            for m in c.consume(num_messages=500, timeout=0.5):
                if m.error() is None and dict(m.headers() or []).get("id", b"").decode() in wanted:
                    got.append(m)
    finally:
        c.close()
    return got


async def test_domain_events_reach_their_topics_and_never_a_socket(pipeline: Pipeline) -> None:
    await wait_ready(pipeline.router.port, 60)
    port = pipeline.router.port
    teacher = await Client.open(port, mint(SECRET, TEACHER, 3600, now=time.time()))
    bystander = await Client.open(port, mint(SECRET, "dom-bystander", 3600, now=time.time()))
    run = uuid.uuid4().hex[:6]
    sent, notes = await asyncio.to_thread(commit_all, pipeline.db.dsn, run)
    assert len(sent) == TRANSACTIONS * EVENTS_PER_TX and len(notes) == TRANSACTIONS

    messages = await asyncio.to_thread(consume_events, pipeline.stack.kafka_bootstrap,
                                       set(sent), 120.0)  # fmt: skip
    by_id: dict[str, list[Any]] = {}
    for m in messages:
        by_id.setdefault(dict(m.headers())["id"].decode(), []).append(m)
    assert set(by_id) == set(sent), f"{len(set(sent) - set(by_id))} domain events missing"
    assert all(len(v) == 1 for v in by_id.values()), "a domain event arrived twice"
    last: dict[tuple[str, str], int] = {}
    for m in messages:  # in the order each partition gave them
        headers = {k: v.decode() for k, v in m.headers()}
        want = sent[headers["id"]]
        env = EventEnvelope.model_validate_json(m.value())
        assert m.topic() == want["topic"] and m.key().decode() == want["key"]
        assert (str(env.event_id), env.event_type, env.data) == (headers["id"], want["type"],
                                                                want["data"])  # fmt: skip
        assert env.source == EVENT_TOPICS[want["topic"]].service
        assert headers["event_type"] == want["type"]
        assert headers["correlation_id"] == env.correlation_id == f"req-{want['seq']}"
        k = (m.topic(), want["key"])
        assert last.get(k, 0) < want["seq"], "out of commit order for one key"
        last[k] = want["seq"]

    frames = await teacher.collect(len(notes), timeout=60)
    await teacher.quiet(1.0)
    await bystander.quiet(0.5)
    got = [f["id"] for f in teacher.notifications() if not f["pending"]]
    assert sorted(got) == sorted(notes) and len(got) == len(set(got))
    assert bystander.notifications() == []
    on_sockets = json.dumps(teacher.frames + bystander.frames + frames)
    assert not [eid for eid in sent if eid in on_sockets], "a domain event reached a socket"
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert not [eid for eid in sent if eid in metrics]
    assert not any(t in metrics for t in EVENT_TOPICS)
    await teacher.close()
    await bystander.close()
