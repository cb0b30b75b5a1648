"""Domain events in SQL and Python on a real Postgres: the registry, the
envelope, the rules shared with notifications, and one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from contracts.errors import InvalidEventError
from contracts.events import EVENT_TOPICS, EventEnvelope, event_violations, publish_event
from contracts.limits import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH
from contracts.projector import DomainEvent, Projector
from tests.fix_stack import Database

TOPIC = "huleedu.file_service.batch.validated.v1"


def test_publish_event_in_sql_builds_the_envelope(db: Database) -> None:
    with psycopg.connect(db.dsn) as conn:
        (eid,) = conn.execute(
            "SELECT outbox.publish_event(%s, %s, %s, %s, %s)",
            (TOPIC, "batch-7", "BatchValidated", Jsonb({"rejected": 2, "é": "ü"}), "req-1"),
        ).fetchone() or (None,)
        conn.commit()
        row = conn.execute("SELECT topic, aggregateid, type, correlation_id, envelope "
                           "FROM outbox.domain_events").fetchone()  # fmt: skip
    assert row is not None
    env = EventEnvelope.model_validate(row[4])
    assert row[:4] == (TOPIC, "batch-7", "BatchValidated", "req-1")
    assert (env.event_id, env.event_type, env.source) == (eid, "BatchValidated", "file_service")
    assert env.correlation_id == "req-1" and env.data == {"rejected": 2, "é": "ü"}
    assert env.event_timestamp.tzinfo is not None


def test_unregistered_topic_is_ob007_with_a_hint(db: Database) -> None:
    with psycopg.connect(db.dsn) as conn:
        for topic in ("huleedu.nobody.thing.happened.v1", "huleedu.notification.teacher.requested.v1",
                      "not a topic", TOPIC + "\n"):  # fmt: skip
            with pytest.raises(psycopg.Error) as ei:
                conn.execute("SELECT outbox.publish_event(%s, 'k', 'T', '{}', 'c')", (topic,))
            conn.rollback()
            assert ei.value.sqlstate == "OB007", topic
            assert ei.value.diag.message_hint and "EVENT_TOPICS" in ei.value.diag.message_hint
            assert [v.sqlstate for v in event_violations(topic, "k", "T", {}, "c")] == ["OB007"]


def _cases() -> list[tuple[str, dict[str, Any]]]:
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(MAX_PAYLOAD_DEPTH):
        cur["x"] = {}
        cur = cur["x"]
    fine = {"topic": TOPIC, "key": "b-1", "event_type": "BatchValidated", "payload": {"n": 1},
            "correlation_id": "c-1"}  # fmt: skip
    return [
        ("valid", fine),
        ("empty key", {**fine, "key": ""}),
        ("blank key", {**fine, "key": " \u3000"}),
        ("long key", {**fine, "key": "k" * 129}),
        ("key at the limit", {**fine, "key": "😀" * 128}),
        ("invisible mark in type", {**fine, "event_type": "Batch\u200e"}),
        ("long correlation", {**fine, "correlation_id": "c" * 257}),
        ("payload too deep", {**fine, "payload": deep}),
        ("payload at depth", {**fine, "payload": deep["x"]}),
        ("payload too big", {**fine, "payload": {"s": "x" * MAX_PAYLOAD_BYTES}}),
        ("payload not an object", {**fine, "payload": [1, 2]}),
        ("long number", {**fine, "payload": {"n": 1234567890123456}}),
        ("unknown topic", {**fine, "topic": "huleedu.x.y.z.v1"}),
    ]


@pytest.mark.parametrize(("name", "case"), _cases(), ids=[c[0] for c in _cases()])
def test_the_database_and_the_contract_agree(module_db: Database, name: str,
                                             case: dict[str, Any]) -> None:  # fmt: skip
    py = event_violations(case["topic"], case["key"], case["event_type"], case["payload"],
                          case["correlation_id"])  # fmt: skip
    with psycopg.connect(module_db.dsn) as conn:
        try:
            conn.execute("SELECT outbox.publish_event(%s, %s, %s, %s, %s)",
                         (case["topic"], case["key"], case["event_type"], Jsonb(case["payload"]),
                          case["correlation_id"]))  # fmt: skip
            db_state = None
        except psycopg.Error as exc:
            db_state = exc.sqlstate
        conn.rollback()
    assert (db_state is None) == (not py), (name, db_state, py)
    if db_state is not None:
        assert db_state in {v.sqlstate for v in py}, (name, db_state, py)


def test_domain_event_and_notifications_commit_or_roll_back_together(db: Database) -> None:
    @dataclass(frozen=True)
    class Validated:
        batch: str
        teacher: str
        rejected: int

    tell = Projector[Any](
        notification_type="batch_validation_failed", teacher_id=lambda e: e.teacher,
        payload=lambda e: {"rejected": e.rejected, "batch_name": "Essay batch 7B"},
        correlation_id=lambda e: f"req-{e.batch}", batch_id=lambda e: e.batch,
        when=lambda e: e.rejected > 0,
    )  # fmt: skip
    spec = DomainEvent[Any](topic=TOPIC, event_type="BatchValidated", key=lambda e: e.batch,
                            data=lambda e: {"batch": e.batch, "rejected": e.rejected},
                            correlation_id=lambda e: f"req-{e.batch}", projectors=(tell,))  # fmt: skip
    with psycopg.connect(db.dsn) as conn:
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            rolled = spec.publish(cur, Validated("b-0", "t-1", 3))
        with conn.transaction(), conn.cursor() as cur:
            told = spec.publish(cur, Validated("b-1", "t-1", 2))
            quiet = spec.publish(cur, Validated("b-2", "t-1", 0))  # nothing for the teacher
        events = {r[0] for r in conn.execute("SELECT id FROM outbox.domain_events")}
        notes = {r[0] for r in conn.execute("SELECT id FROM outbox.teacher_notifications")}
    assert len(rolled.notification_ids) == 1 and rolled.event_id not in events
    assert not (set(rolled.notification_ids) & notes)
    assert events == {told.event_id, quiet.event_id}
    assert notes == set(told.notification_ids) and quiet.notification_ids == ()
    with pytest.raises(ValueError, match="not a registered domain topic"):
        DomainEvent[Any](topic="huleedu.x.y.z.v1", event_type="T", key=str, data=dict,
                         correlation_id=str)  # fmt: skip


def test_python_refuses_before_writing(db: Database) -> None:
    with psycopg.connect(db.dsn) as conn, conn.cursor() as cur:
        with pytest.raises(InvalidEventError) as ei:
            publish_event(cur, "huleedu.x.y.z.v1", "", "T", {}, "c")
        assert {v.sqlstate for v in ei.value.violations} == {"OB007", "OB004"}
        assert conn.execute("SELECT count(*) FROM outbox.domain_events").fetchone() == (0,)


def test_domain_events_are_immutable_and_services_only_write(db: Database) -> None:
    role = f"svc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE outbox_service")
    try:
        with psycopg.connect(db.dsn.replace("postgres@", f"{role}@")) as conn:
            with conn.cursor() as cur:
                publish_event(cur, TOPIC, "b-1", "BatchValidated", {}, "c-1")
            conn.execute("SELECT outbox.publish_event(%s, 'b-2', 'T', '{}', 'c')", (TOPIC,))
            conn.commit()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM outbox.domain_events")
            conn.rollback()
        with psycopg.connect(db.dsn) as conn:
            with pytest.raises(psycopg.Error) as ei:
                conn.execute("UPDATE outbox.domain_events SET type = 'X'")
            assert ei.value.sqlstate == "OB006"
    finally:
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
    assert len(EVENT_TOPICS) >= 10
