"""Kafka in, Redis out: the router's ingest loop.

Offsets are committed only after a batch is durably in Redis (and its poison
records are acknowledged by the dead-letter topic), so a crash at any point
re-reads rather than loses; the store's dedupe absorbs the re-read.

The loop is a two-stage pipeline: while batch *k* is being recorded in Redis,
batch *k+1* is read and validated. Batches are recorded strictly one after
another, so per-partition (per-teacher) order is kept.

Commits are asynchronous: a synchronous commit is a broker round trip per
batch (about as long as the Redis call), and the loop does not need its answer.
A lost commit (a crash, a rebalance) only means re-reading records that are
already recorded. What a batch recorded is handed to the consumer with the next
read (within ~100 ms when the topic is quiet). Every consumer call (read,
commit, close) runs on one thread at a time; on revocation and on shutdown what
is recorded is committed synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from router.cancel import checkpoint
from router.decode import Headers, Routable, decode
from router.errors import (
    PoisonMessageError,
    ReplicationShortError,
    SlotMovingError,
    StoreUnavailableError,
)
from router.metrics import RouterMetrics
from router.settings import RouterSettings
from router.store import Store

# How long the broker may hold a fetch that finds nothing (librdkafka's 500 ms
# would be the latency of a quiet topic's next record).
FETCH_WAIT_MAX_MS = 10

log = logging.getLogger(__name__)
# librdkafka's own log lines go through Python logging (the CLI's format, JSON
# included) instead of raw "%3|...|FAIL|" lines on stderr.
KAFKA_LOG = logging.getLogger("router.librdkafka")

_CHUNK = 500  # notifications per Lua call
# A batch whose slot a reshard is moving is sent again this often (seconds):
# Redis ran nothing of it, and moving one slot's keys takes moments.
SLOT_MOVING_RETRY_S = 0.1


UNREADABLE_HEADERS = (
    "a header name is not UTF-8, so the Kafka client cannot read the record's headers "
    "(its `id` among them); whatever wrote the record must write header names as UTF-8"
)


def record_headers(m: Message) -> Headers | None:
    """The record's headers, as the Kafka client gives them.

    Raises:
        PoisonMessageError: ``unreadable_headers``: a header name is not UTF-8
            (any producer but librdkafka's bindings can write one).
    """
    try:
        headers = m.headers()
        if isinstance(headers, list) and headers and not _intact(headers):
            raise ValueError("a header pair lacks its name")
    except Exception:  # see _intact
        raise PoisonMessageError("unreadable_headers", UNREADABLE_HEADERS) from None
    return headers


def _intact(headers: list[Any]) -> bool:
    """Whether every header pair holds a name and a value.

    For a name it cannot decode, confluent-kafka (2.16) leaves a NULL in the
    pair and a UnicodeDecodeError pending, which the next call into C raises as
    a SystemError (here, if ``headers()`` itself did not), and it gives the same
    list again on the next ``headers()``. Reading that name from Python crashes
    the interpreter. The garbage collector's list of what a container refers to
    skips NULLs without touching them."""
    return (len(gc.get_referents(headers)) == len(headers)
            and len(gc.get_referents(*headers)) == 2 * len(headers))  # fmt: skip


def dead_letter_headers(
    m: Message, exc: PoisonMessageError
) -> list[tuple[str, str | bytes | None]]:
    """Original headers plus what went wrong and where the record came from.
    Headers the client cannot read are left out, and ``dlq.headers_dropped``
    says so."""
    try:
        raw: Any = record_headers(m) or []
    except PoisonMessageError:
        raw = [("dlq.headers_dropped", b"true")]
    items = list(raw.items()) if isinstance(raw, dict) else list(raw)
    headers: list[tuple[str, str | bytes | None]] = list(items)
    headers += [
        ("dlq.reason", exc.kind.encode()),
        ("dlq.error", exc.detail.encode(errors="backslashreplace")[:2000]),
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


@dataclass
class Batch:
    """One read's worth of records, validated: what to record, what to dead-letter,
    and the offsets to commit once both are done."""

    received_at: float = 0.0  # epoch seconds the records were read
    good: list[Routable] = field(default_factory=list)
    sources: list[Message] = field(default_factory=list)  # the record of each good one
    dead: list[tuple[Message, PoisonMessageError]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class Ingestor:
    def __init__(self, settings: RouterSettings, *, store: Store, metrics: RouterMetrics) -> None:
        self.s = settings
        self.store = store
        self.metrics = metrics
        self.assigned: set[tuple[str, int]] = set()
        # Next offset to read per partition, for what is recorded in Redis, and
        # whether it moved since the last commit. Written by the loop, read on the
        # consumer's thread (commits, rebalance callbacks).
        self.recorded: dict[tuple[str, int], int] = {}
        self._moved = False
        self._lock = threading.Lock()

    def _consumer_conf(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.s.kafka_bootstrap,
            "group.id": self.s.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.s.kafka_session_timeout_ms,
            # librdkafka's 3 s, or a third of a shorter session (as Kafka advises).
            "heartbeat.interval.ms": min(3000, self.s.kafka_session_timeout_ms // 3),
            "max.poll.interval.ms": self.s.kafka_max_poll_interval_ms,
            "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
            "client.id": "outbox-router",
            "on_commit": self._on_commit,
            "logger": KAFKA_LOG,
            # librdkafka's statistics carry each partition's lag (read in _on_stats).
            "statistics.interval.ms": 5000,
            "stats_cb": self._on_stats,
        }

    # -- consumer callbacks and calls (on the consumer's thread) ---------------

    def _on_commit(self, err: KafkaError | None, parts: list[TopicPartition]) -> None:
        failed = [p for p in parts if p.error is not None]
        if err is not None or failed:
            log.warning("offset commit failed (%s); those records will be re-read and "
                        "deduplicated", err or failed[0].error)  # fmt: skip

    def _on_stats(self, raw: str) -> None:
        """Consumer lag per owned partition (-1 while librdkafka does not know it)."""
        try:
            parts = json.loads(raw)["topics"][self.s.topic]["partitions"]
        except (KeyError, TypeError, ValueError):
            return
        for key, p in parts.items():
            if key != "-1" and (self.s.topic, int(key)) in self.assigned:
                self.metrics.consumer_lag.labels(key).set(int(p.get("consumer_lag", -1)))

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in parts}
        log.info("assigned %s", sorted(p.partition for p in parts))

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        keys = {(p.topic, p.partition) for p in parts}
        self._commit(consumer, keys, wait=True)
        with self._lock:
            for k in keys:
                self.recorded.pop(k, None)
        self.assigned -= keys
        for p in parts:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(str(p.partition))
        log.info("revoked %s", sorted(p.partition for p in parts))

    def _commit(self, consumer: Consumer, keys: set[tuple[str, int]] | None = None, *,
                wait: bool) -> None:  # fmt: skip
        """Commit what is recorded for the assigned partitions (``keys`` only, if
        given); ``wait`` for the broker's answer or not."""
        with self._lock:
            tps = [TopicPartition(t, p, o) for (t, p), o in self.recorded.items()
                   if (t, p) in self.assigned and (keys is None or (t, p) in keys)]  # fmt: skip
            self._moved = False
        if not tps:
            return
        try:
            if wait:
                consumer.commit(offsets=tps, asynchronous=False)
            else:
                consumer.commit(offsets=tps, asynchronous=True)
        except Exception as exc:  # no longer ours, or the broker is gone: re-read later
            log.warning("offset commit failed (%s); records will be re-read", exc)

    def _commit_and_take(self, consumer: Consumer) -> list[Message]:
        """Hand what was recorded since the last call to an asynchronous commit,
        then read the next batch."""
        if self._moved:
            self._commit(consumer, wait=False)
        return _take_batch(consumer, self.s.batch_max)

    # -- the loop --------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in flight is finished and committed."""
        consumer = Consumer(self._consumer_conf())
        producer = Producer({"bootstrap.servers": self.s.kafka_bootstrap, "acks": "all",
                             "enable.idempotence": True, "linger.ms": 5, "logger": KAFKA_LOG})  # fmt: skip
        consumer.subscribe([self.s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consuming %s as group %s", self.s.topic, self.s.group_id)
        inflight: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                msgs = await asyncio.to_thread(self._commit_and_take, consumer)
                if not msgs:
                    continue
                batch = self.validate(msgs)
                if inflight is not None:
                    await inflight  # recorded strictly in order
                inflight = asyncio.create_task(self.record(batch, producer, stop))
        finally:
            if inflight is not None:
                try:
                    await inflight
                except Exception as exc:  # already raised above, or met while stopping
                    log.error("recording a batch failed (%s); it will be re-read", exc)
            await asyncio.to_thread(producer.flush, 5)
            await asyncio.to_thread(self._commit, consumer, wait=True)
            await asyncio.to_thread(consumer.close)
            self.assigned.clear()
            log.info("consumer closed")

    def validate(self, msgs: Sequence[Message]) -> Batch:
        """Sort records into good and poison (pure CPU; no I/O)."""
        now = time.time()
        batch = Batch(received_at=now)
        consumed = 0
        observe = self.metrics.kafka_read.observe
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            consumed += 1
            kind, ts_ms = m.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE:
                observe(max(0.0, now - ts_ms / 1000))
            try:
                batch.good.append(decode(m.value(), record_headers(m)))
                batch.sources.append(m)
            except PoisonMessageError as exc:
                batch.dead.append((m, exc))
            batch.offsets[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
        self.metrics.consumed.inc(consumed)
        return batch

    async def record(self, batch: Batch, producer: Producer, stop: asyncio.Event) -> None:
        """Dead-letter the poison, record the good in Redis, then mark the offsets
        committable. Redis being away is waited out (nothing is committed)."""
        if batch.dead:
            await self._dead_letter(batch.dead, producer)
        for i in range(0, len(batch.good), _CHUNK):
            chunk = batch.good[i : i + _CHUNK]
            positions = await self._ingest(chunk, batch.received_at, stop)
            if positions is None:
                return  # stopping; nothing of this batch is committed
            rejected = [(r, why) for r, why in zip(chunk, positions, strict=True)
                        if isinstance(why, PoisonMessageError)]  # fmt: skip
            if rejected:
                await self._dead_letter_routable(rejected, producer, batch)
            new = sum(1 for p in positions if isinstance(p, str) and p)
            self.metrics.recorded.inc(new)
            self.metrics.deduplicated.inc(sum(1 for p in positions if p is None))
        with self._lock:
            self.recorded.update(batch.offsets)
            self._moved = True

    async def _ingest(self, chunk: list[Routable], received_at: float,
                      stop: asyncio.Event) -> list[str | PoisonMessageError | None] | None:  # fmt: skip
        """Record ``chunk``: a position per item, ``None`` for a duplicate, or why the
        store refused that item. Redis being away is waited out; ``None`` if
        stopping meanwhile. A refusal of the whole chunk (a script error, a value
        Redis will not take) is narrowed down to the items that cause it, so one
        bad item never holds back the others."""
        backoff = 0.2
        retries = 0
        while True:
            checkpoint()  # a cancellation redis-py lost (router/cancel.py): re-read later
            try:
                positions = await self.store.ingest(chunk, received_at=received_at)
                if retries:
                    log.info("Redis has the waiting batch after %d retries", retries)
                return list(positions)
            except StoreUnavailableError as exc:
                if isinstance(exc, ReplicationShortError):
                    self.metrics.replication_short.inc()
                if stop.is_set():
                    log.warning("stopping with a batch not recorded (%s); it will be re-read", exc)
                    return None
                if isinstance(exc, SlotMovingError):
                    # Nothing of that slot's call ran (the other slots' calls
                    # did, and are duplicates when sent again), and a slot
                    # moves in moments: try again soon, say so about once a second.
                    self.metrics.slot_moving.inc()
                    if retries % 10 == 0:
                        log.warning("%s (retry %d, nothing committed)", exc, retries + 1)
                    retries += 1
                    await asyncio.sleep(SLOT_MOVING_RETRY_S)
                    continue
                log.warning("%s; retrying in %.1f s (nothing committed)", exc, backoff)
                retries += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                if len(chunk) == 1:
                    return [PoisonMessageError("store_rejected", f"{type(exc).__name__}: "
                                               f"{str(exc)[:500]}")]  # fmt: skip
                half = len(chunk) // 2
                first = await self._ingest(chunk[:half], received_at, stop)
                if first is None:
                    return None
                rest = await self._ingest(chunk[half:], received_at, stop)
                return None if rest is None else first + rest

    async def _dead_letter_routable(self, rejected: list[tuple[Routable, PoisonMessageError]],
                                    producer: Producer, batch: Batch) -> None:  # fmt: skip
        by_id = {id(r): m for r, m in zip(batch.good, batch.sources, strict=True)}
        await self._dead_letter([(by_id[id(r)], exc) for r, exc in rejected], producer)

    async def _dead_letter(self, dead: list[tuple[Message, PoisonMessageError]],
                           producer: Producer) -> None:  # fmt: skip
        """Send each record to the dead-letter topic with why; wait until the broker
        has every one. A record the DLQ refuses (too large with its headers) is
        sent without its value: the headers say where the original still is."""
        failed: list[tuple[Message, PoisonMessageError, str]] = []

        def sent(
            m: Message, exc: PoisonMessageError
        ) -> Callable[[KafkaError | None, Message], None]:
            def cb(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    failed.append((m, exc, str(err)))

            return cb

        for m, exc in dead:
            log.warning("dead-lettering %s[%s]@%s: %s", m.topic(), m.partition(), m.offset(),
                        str(exc)[:300])  # fmt: skip
            self._produce(producer, m, exc, sent(m, exc), keep_value=True)
            self.metrics.dead_lettered.labels(exc.kind).inc()
        await self._flush(producer)
        for m, exc, why in failed:
            log.warning("the DLQ refused %s[%s]@%s (%s); sending it without its value",
                        m.topic(), m.partition(), m.offset(), why)  # fmt: skip
            self._produce(producer, m, exc, None, keep_value=False)
        if failed:
            await self._flush(producer)

    def _produce(self, producer: Producer, m: Message, exc: PoisonMessageError,
                 cb: Callable[[KafkaError | None, Message], None] | None, *,
                 keep_value: bool) -> None:  # fmt: skip
        headers = dead_letter_headers(m, exc)
        value = m.value() if keep_value else None
        if not keep_value:
            headers = [h for h in headers if h[0].startswith("dlq.")]
            headers.append(("dlq.value_dropped", b"true"))
        while True:
            try:
                producer.produce(self.s.dlq_topic, value=value, key=m.key(), headers=headers,
                                 on_delivery=cb)  # fmt: skip
                return
            except BufferError:
                producer.poll(0.5)  # the local queue is full: let it drain
            except KafkaException as err:
                if not keep_value:
                    raise
                # refused before sending (e.g. larger than message.max.bytes)
                log.warning("the DLQ producer refused %s[%s]@%s (%s); sending it without "
                            "its value", m.topic(), m.partition(), m.offset(), err)  # fmt: skip
                value, keep_value = None, False
                headers = [h for h in headers if h[0].startswith("dlq.")]
                headers.append(("dlq.value_dropped", b"true"))

    async def _flush(self, producer: Producer) -> None:
        backoff = 0.5
        while (left := await asyncio.to_thread(producer.flush, 10)) > 0:
            log.warning("%d dead letters not yet acknowledged; retrying", left)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10)
