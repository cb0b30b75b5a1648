"""Make sure the notification topic and the registered domain-event topics
exist with their partition counts."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import KafkaError, KafkaException, NewTopic

from relay.errors import RelayError

# librdkafka's own log lines go through Python logging (the CLI's format, JSON
# included) instead of raw "%3|...|FAIL|" lines on stderr.
KAFKA_LOG = logging.getLogger("relay.librdkafka")


class TopicError(RelayError):
    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(topic, reason)
        self.topic = topic
        self.reason = reason

    def __str__(self) -> str:
        return f"topic {self.topic}: {self.reason}; check OUTBOX_KAFKA_BOOTSTRAP and broker ACLs"


def ensure_topic(bootstrap: str, topic: str, partitions: int) -> bool:
    """Create ``topic`` unless it exists; True when it was created.

    Raises:
        TopicError: the broker is unreachable or refused.
    """
    return bool(_create_missing(bootstrap, [(topic, partitions)]))


def _create_missing(bootstrap: str, wanted: list[tuple[str, int]]) -> list[str]:
    """Create those of ``wanted`` (name, partitions) that do not exist, with one
    metadata read and one create request; the names created."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000,
                            "logger": KAFKA_LOG}  # fmt: skip
    admin = AdminClient(conf)
    current = wanted[0][0] if wanted else ""
    try:
        md = admin.list_topics(timeout=10)
        missing = [
            (t, n) for t, n in wanted if t not in md.topics or md.topics[t].error is not None
        ]
        if not missing:
            return []
        futures = admin.create_topics([NewTopic(t, num_partitions=n) for t, n in missing])
        created = []
        for t, _ in missing:
            current = t
            try:
                futures[t].result(timeout=15)
                created.append(t)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not (
                    isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS
                ):
                    raise
        return created
    except KafkaException as exc:
        raise TopicError(current, str(exc)) from exc


def ensure_topics(bootstrap: str, notification_topic: str, partitions: int, *,
                  topic_prefix: str = "outbox") -> list[str]:  # fmt: skip
    """Every topic the pipeline writes, so that it also runs where the broker
    does not create topics itself: the notification topic, its dead-letter
    topic, Debezium's heartbeat topic and every topic of
    ``contracts.events.EVENT_TOPICS`` (with its registered partition count).
    Returns the names of those it created.

    Raises:
        TopicError: the broker is unreachable or refused.
    """
    from contracts.events import EVENT_TOPICS

    wanted = [(notification_topic, partitions), (notification_topic + ".dlq", 1),
              (f"__debezium-heartbeat.{topic_prefix}", 1)]  # fmt: skip
    wanted += [(t.topic, t.partitions) for t in EVENT_TOPICS.values()]
    return _create_missing(bootstrap, wanted)
