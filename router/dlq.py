"""Read and re-publish dead-lettered records (used by `outbox dlq ...`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition

from router.consumer import KAFKA_LOG, record_headers
from router.decode import header_map, header_text
from router.errors import PoisonMessageError


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str
    error: str
    source: str

    def as_dict(self) -> dict[str, object]:
        return {"partition": self.partition, "offset": self.offset, "reason": self.reason,
                "error": self.error, "source": self.source,
                "key": self.key.decode(errors="replace") if self.key else None,
                "value": self.value.decode(errors="replace") if self.value else None}  # fmt: skip


def read_dead_letters(bootstrap: str, topic: str, *, limit: int) -> list[DeadLetter]:
    """Every record of the dead-letter topic from the start (up to ``limit``)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"outbox-dlq-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "logger": KAFKA_LOG})  # fmt: skip
    try:
        md = c.list_topics(topic, timeout=10)
        tm = md.topics.get(topic)
        if tm is None or tm.error is not None:
            return []
        parts = [TopicPartition(topic, p, 0) for p in tm.partitions]
        ends = {}
        for tp in parts:
            _, hi = c.get_watermark_offsets(tp, timeout=10)
            ends[tp.partition] = hi
        todo = {p: hi for p, hi in ends.items() if hi > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        out: list[DeadLetter] = []
        while todo and len(out) < limit:
            msgs = c.consume(500, timeout=2)
            if not msgs:
                break
            for m in msgs:
                if m.error() is not None:
                    continue
                p, o = m.partition() or 0, m.offset() or 0
                try:
                    raw = record_headers(m) or []
                except PoisonMessageError as exc:  # not one the router wrote
                    raw, unreadable = [], exc.detail
                else:
                    unreadable = ""
                hdrs = [(k, v if isinstance(v, bytes) else (v or "").encode())
                        for k, v in (raw.items() if isinstance(raw, dict) else raw)]  # fmt: skip
                h = {k: header_text(v) for k, v in header_map(hdrs).items()}
                src = f"{h.get('dlq.source.topic')}[{h.get('dlq.source.partition')}]@{h.get('dlq.source.offset')}"
                out.append(DeadLetter(p, o, m.key(), m.value(), hdrs, h.get("dlq.reason") or "?",
                                      h.get("dlq.error") or unreadable, src))  # fmt: skip
                if o + 1 >= todo.get(p, 0):
                    todo.pop(p, None)
        return out[:limit]
    finally:
        c.close()


def republish(bootstrap: str, topic: str, records: list[DeadLetter]) -> int:
    """Send ``records`` back to ``topic`` without their dlq.* headers."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "logger": KAFKA_LOG})  # fmt: skip
    for r in records:
        hdrs = [(k, v) for k, v in r.headers if not k.startswith("dlq.")]
        p.produce(topic, key=r.key, value=r.value, headers=hdrs)  # type: ignore[arg-type]
    left = p.flush(30)
    return len(records) - left
