"""Internal domain events through the same outbox machinery as notifications.

A service publishes a domain event (``huleedu.{service}.{entity}.{action}.v1``)
in its own transaction with :func:`publish_event` or ``outbox.publish_event()``
in SQL; Debezium routes each committed row to its topic, keyed by ``key``, with
the headers ``id``, ``event_type`` and ``correlation_id``. Domain events are for
services: the router never consumes them, and they carry no user context.

The Kafka value is the platform's event envelope, built by the database from
the row so that it cannot disagree with it::

    {"event_id": "...", "event_type": "BatchValidated", "source": "file_service",
     "correlation_id": "...", "event_timestamp": "2026-12-01T09:00:00.123456Z",
     "data": {...}}

Only topics in :data:`EVENT_TOPICS` may be published to; the database holds the
same registry (``outbox.event_topics``, generated into ``sql/R__event_topics.sql``
by :func:`topics_sql`) and refuses any other topic with SQLSTATE ``OB007``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from contracts.errors import (
    SQLSTATE_MALFORMED,
    SQLSTATE_UNKNOWN_TOPIC,
    InvalidEventError,
    Violation,
)
from contracts.limits import MAX_TOPIC_CHARS, TOPIC_PATTERN, sql_literal
from contracts.notification import NOTIFICATION_TOPIC
from contracts.outbox import AsyncCursor, SyncCursor
from contracts.rules import id_violations, payload_violations

_TOPIC = re.compile(TOPIC_PATTERN)


@dataclass(frozen=True)
class EventTopic:
    """One domain topic a service may publish to."""

    topic: str
    service: str  # the producer: the envelope's ``source``
    partitions: int
    description: str


EVENT_TOPICS: dict[str, EventTopic] = {
    t.topic: t
    for t in (
        EventTopic("huleedu.class_management.class.created.v1", "class_management", 3,
                   "A class was created."),
        EventTopic("huleedu.class_management.roster.updated.v1", "class_management", 3,
                   "Students joined or left a class."),
        EventTopic("huleedu.class_management.student_matching.requested.v1", "class_management",
                   3, "Essays need their students confirmed by the teacher."),
        EventTopic("huleedu.file_service.batch_files.uploaded.v1", "file_service", 3,
                   "Files were added to a batch."),
        EventTopic("huleedu.file_service.batch_file.removed.v1", "file_service", 3,
                   "A file was removed from a batch."),
        EventTopic("huleedu.file_service.batch.validated.v1", "file_service", 3,
                   "A batch's files were validated (some may have failed)."),
        EventTopic("huleedu.batch_orchestrator.batch.status_changed.v1", "batch_orchestrator",
                   3, "A batch was registered, started, completed or failed."),
        EventTopic("huleedu.batch_orchestrator.batch.students_associated.v1",
                   "batch_orchestrator", 3, "A batch's essays were matched to students."),
        EventTopic("huleedu.spellchecker.batch.spellcheck_completed.v1", "spellchecker", 3,
                   "Spellchecking of a batch finished."),
        EventTopic("huleedu.cj_assessment.batch.assessment_completed.v1", "cj_assessment", 3,
                   "Comparative-judgement assessment of a batch finished."),
        EventTopic("huleedu.result_aggregator.results.ready.v1", "result_aggregator", 3,
                   "A batch's results were aggregated."),
        EventTopic("huleedu.platform.maintenance.scheduled.v1", "platform", 1,
                   "Planned maintenance was scheduled."),
    )
}  # fmt: skip


class EventEnvelope(BaseModel):
    """The Kafka value of a domain event, for consumers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID
    event_type: str
    source: str
    correlation_id: str
    event_timestamp: datetime
    data: dict[str, Any]


def topic_violations(topic: Any) -> list[Violation]:
    """What is wrong with ``topic`` as a domain topic to publish to."""
    if not isinstance(topic, str) or not topic:
        return [Violation("topic", "is required; pass the topic name", SQLSTATE_MALFORMED)]
    if topic not in EVENT_TOPICS:
        known = ", ".join(sorted(EVENT_TOPICS))
        return [Violation("topic", f"{topic[:80]!r} is not a registered domain topic; add it "
                          f"to contracts/events.py EVENT_TOPICS and run `outbox db migrate` "
                          f"(known: {known})", SQLSTATE_UNKNOWN_TOPIC)]  # fmt: skip
    return []


def event_violations(topic: Any, key: Any, event_type: Any, payload: Any,
                     correlation_id: Any) -> list[Violation]:  # fmt: skip
    """Every rule the database's ``outbox.validate_domain_event()`` applies."""
    out = topic_violations(topic)
    out += id_violations("event_key", key, required=True)
    out += id_violations("event_type", event_type, required=True)
    out += id_violations("correlation_id", correlation_id, required=True)
    out += payload_violations(payload)
    return out


def _row(topic: str, key: str, event_type: str, payload: dict[str, Any], correlation_id: str,
         event_id: uuid.UUID | None) -> tuple[str, str, str, str, str, str]:  # fmt: skip
    found = event_violations(topic, key, event_type, payload, correlation_id)
    if found:
        raise InvalidEventError(found)
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (str(event_id or uuid.uuid4()), topic, key, event_type, correlation_id, text)


INSERT_EVENT_SQL = (
    "INSERT INTO outbox.domain_events (id, topic, aggregateid, type, correlation_id, payload) "
    "VALUES (%s, %s, %s, %s, %s, %s::jsonb)"
)


def publish_event(
    cursor: SyncCursor,
    topic: str,
    key: str,
    event_type: str,
    payload: dict[str, Any],
    correlation_id: str,
    *,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Write a domain event in the caller's transaction; return its event id.

    Raises:
        InvalidEventError: a rule is broken (the violations name the
            field and the SQLSTATE the database would answer with).
        psycopg.Error: from the database (SQLSTATE ``OB004``..``OB007``).
    """
    row = _row(topic, key, event_type, payload, correlation_id, event_id)
    cursor.execute(INSERT_EVENT_SQL, row)
    return uuid.UUID(row[0])


async def publish_event_async(
    cursor: AsyncCursor,
    topic: str,
    key: str,
    event_type: str,
    payload: dict[str, Any],
    correlation_id: str,
    *,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """The async twin of :func:`publish_event`, for psycopg ``AsyncCursor``."""
    row = _row(topic, key, event_type, payload, correlation_id, event_id)
    await cursor.execute(INSERT_EVENT_SQL, row)
    return uuid.UUID(row[0])


def registry_problems() -> list[str]:
    """What is wrong with :data:`EVENT_TOPICS` itself (a unit test asserts none)."""
    out = []
    for name, t in EVENT_TOPICS.items():
        if name != t.topic or not _TOPIC.fullmatch(name) or len(name) > MAX_TOPIC_CHARS:
            out.append(f"{name}: not huleedu.{{service}}.{{entity}}.{{action}}.v{{N}}")
        elif name.split(".")[1] != t.service:
            out.append(f"{name}: its service part is not {t.service}")
        if name == NOTIFICATION_TOPIC or t.service == "notification":
            out.append(f"{name}: the notification topic is not a domain topic")
        if not 1 <= t.partitions <= 1000:
            out.append(f"{name}: {t.partitions} partitions")
    return out


def topics_sql() -> str:
    """The SQL that makes ``outbox.event_topics`` equal to :data:`EVENT_TOPICS`."""
    rows = ",\n".join(
        f"    ({sql_literal(t.topic)}, {sql_literal(t.service)}, {t.partitions}, "
        f"{sql_literal(t.description)})"
        for t in EVENT_TOPICS.values()
    )
    return (
        "-- Generated from contracts/events.py by `outbox db generate`; do not edit.\n"
        "-- A repeatable migration: re-applied whenever its content changes.\n"
        "DELETE FROM outbox.event_topics\n"
        "WHERE topic NOT IN (" + ", ".join(sql_literal(t) for t in EVENT_TOPICS) + ");\n"
        "INSERT INTO outbox.event_topics (topic, service, partitions, description)\nVALUES\n"
        + rows
        + "\nON CONFLICT (topic) DO UPDATE SET\n"
        "    service = EXCLUDED.service, partitions = EXCLUDED.partitions,\n"
        "    description = EXCLUDED.description;\n"
    )
