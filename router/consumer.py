"""Kafka in, Redis out: the router's ingest loop.

Offsets are committed only after a batch is durably in Redis (and its poison
records are acknowledged by the dead-letter topic), so a crash at any point
re-reads rather than loses; the store's dedupe absorbs the re-read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from router.decode import Routable, decode
from router.errors import PoisonMessageError, StoreUnavailableError
from router.metrics import RouterMetrics
from router.settings import RouterSettings
from router.store import Store

log = logging.getLogger(__name__)

_CHUNK = 500  # notifications per Lua call


def dead_letter_headers(
    m: Message, exc: PoisonMessageError
) -> list[tuple[str, str | bytes | None]]:
    """Original headers plus what went wrong and where the record came from."""
    raw = m.headers() or []
    items = list(raw.items()) if isinstance(raw, dict) else list(raw)
    headers: list[tuple[str, str | bytes | None]] = list(items)
    headers += [
        ("dlq.reason", exc.kind.encode()),
        ("dlq.error", exc.detail.encode()[:2000]),
        ("dlq.source.topic", (m.topic() or "").encode()),
        ("dlq.source.partition", str(m.partition()).encode()),
        ("dlq.source.offset", str(m.offset()).encode()),
    ]
    return headers


def _take_batch(consumer: Consumer, batch_max: int) -> list[Message]:
    """Wait up to 100 ms for one record, then take what else is already there.

    ``consume(n, timeout)`` alone waits for ``n`` records or the whole timeout,
    which would add up to the timeout to every quiet-time notification.
    """
    first = consumer.consume(1, 0.1)
    if not first or batch_max == 1:
        return list(first)
    return [*first, *consumer.consume(batch_max - 1, 0)]


class Ingestor:
    def __init__(self, settings: RouterSettings, *, store: Store, metrics: RouterMetrics) -> None:
        self.s = settings
        self.store = store
        self.metrics = metrics
        self.assigned: set[tuple[str, int]] = set()
        self.batches = 0

    def _consumer_conf(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.s.kafka_bootstrap,
            "group.id": self.s.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.s.kafka_session_timeout_ms,
            "max.poll.interval.ms": self.s.kafka_max_poll_interval_ms,
            "fetch.wait.max.ms": 10,
            "client.id": "outbox-router",
        }

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in parts}
        log.info("assigned %s", sorted(p.partition for p in parts))

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self.assigned -= {(p.topic, p.partition) for p in parts}
        log.info("revoked %s", sorted(p.partition for p in parts))

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in flight is finished and committed."""
        consumer = Consumer(self._consumer_conf())
        producer = Producer({"bootstrap.servers": self.s.kafka_bootstrap, "acks": "all",
                             "enable.idempotence": True, "linger.ms": 5})  # fmt: skip
        consumer.subscribe([self.s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consuming %s as group %s", self.s.topic, self.s.group_id)
        try:
            while not stop.is_set():
                msgs = await asyncio.to_thread(_take_batch, consumer, self.s.batch_max)
                if msgs:
                    await self.process(msgs, consumer, producer, stop)
        finally:
            await asyncio.to_thread(producer.flush, 5)
            await asyncio.to_thread(consumer.close)
            self.assigned.clear()
            log.info("consumer closed")

    async def process(self, msgs: Sequence[Message], consumer: Consumer, producer: Producer,
                      stop: asyncio.Event) -> None:  # fmt: skip
        good: list[Routable] = []
        dead: list[tuple[Message, PoisonMessageError]] = []
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            self.metrics.consumed.inc()
            try:
                good.append(decode(m.value(), m.headers()))
            except PoisonMessageError as exc:
                dead.append((m, exc))
            offsets[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
        if dead:
            await self._dead_letter(dead, producer)
        backoff = 0.2
        for i in range(0, len(good), _CHUNK):
            chunk = good[i : i + _CHUNK]
            while True:
                try:
                    positions = await self.store.ingest(chunk)
                    break
                except StoreUnavailableError as exc:
                    if stop.is_set():
                        log.warning(
                            "stopping with a batch not recorded (%s); it will be re-read", exc
                        )
                        return
                    log.warning("%s; retrying in %.1f s (nothing committed)", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            new = sum(1 for p in positions if p)
            self.metrics.recorded.inc(new)
            self.metrics.deduplicated.inc(len(positions) - new)
        if offsets:
            tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            try:
                await asyncio.to_thread(consumer.commit, offsets=tps, asynchronous=False)
            except Exception as exc:  # a rebalance may refuse it: the records are re-read
                log.warning(
                    "offset commit failed (%s); records will be re-read and deduplicated", exc
                )
        self.batches += 1

    async def _dead_letter(self, dead: list[tuple[Message, PoisonMessageError]],
                           producer: Producer) -> None:  # fmt: skip
        for m, exc in dead:
            log.warning("dead-lettering %s[%s]@%s: %s", m.topic(), m.partition(), m.offset(), exc)
            producer.produce(self.s.dlq_topic, value=m.value(), key=m.key(),
                             headers=dead_letter_headers(m, exc))  # fmt: skip
            self.metrics.dead_lettered.labels(exc.kind).inc()
        backoff = 0.5
        while (left := await asyncio.to_thread(producer.flush, 10)) > 0:
            log.warning("%d dead letters not yet acknowledged; retrying", left)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10)
