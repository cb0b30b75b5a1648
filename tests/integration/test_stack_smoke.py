"""The stack is real: a committed outbox row comes out of Kafka through Debezium."""

from __future__ import annotations

import json
import uuid

import psycopg

from tests.fix_kafka import ConnectorHandle, consume, make_consumer
from tests.fix_stack import Database


def test_committed_row_reaches_topic_and_rolled_back_row_never_does(
    db: Database, connector: ConnectorHandle
) -> None:
    consumer = make_consumer(connector.settings.kafka_bootstrap, connector.topic)
    try:
        rolled_back = uuid.uuid4()
        with psycopg.connect(db.dsn) as conn:
            conn.execute(
                "SELECT outbox.notify_teacher('t-rb', 'class_created', '{}', 'c', NULL, 'k1', "
                "NULL, %s)",
                (rolled_back,),
            )
            conn.rollback()
            committed = conn.execute(
                "SELECT outbox.notify_teacher('teacher-7', 'class_created', "
                "'{\"name\": \"7B\"}', 'corr-1', NULL, 'class-1')"
            ).fetchone()
            conn.commit()
        assert committed is not None
        event_id = committed[0]
        got = consume(consumer, 1, timeout=30)
        # Give a late rolled-back record a chance to show up if it ever could.
        got += consume(consumer, 1, timeout=2)
    finally:
        consumer.close()
    assert len(got) == 1, [m.value() for m in got]
    m = got[0]
    assert m.topic() == connector.topic
    assert m.key() == b"teacher-7"
    value = json.loads(m.value())
    assert value["teacher_id"] == "teacher-7"
    assert value["payload"] == {"name": "7B"}
    assert value["class_id"] == "class-1"
    headers = dict(m.headers() or [])
    assert headers["id"].decode() == str(event_id)
    assert headers["notification_type"] == b"class_created"
    assert str(rolled_back) not in m.value().decode()
