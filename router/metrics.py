"""Prometheus metrics of one router process (its own registry).

The per-frame metrics (frames delivered and the two latency histograms) are
updated tens of thousands of times a second on the event loop's thread, so they
are plain counters read by a collector at scrape time (which runs on the same
thread) instead of ``prometheus_client``'s locked values: about a microsecond
less per frame. The rest are ordinary ``prometheus_client`` metrics.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class LoopHistogram:
    """A histogram for one thread: ``observe`` is a bisect and two additions."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self) -> HistogramMetricFamily:
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            # floats, so 1 is "1.0" as prometheus_client writes it
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self.sum
        )


class LoopCounter:
    """A counter for one thread."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, value=self.value)


class _LoopCollector(Collector):
    def __init__(self, metrics: Sequence[LoopHistogram | LoopCounter]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for m in self.metrics:
            yield m.family()


# Every label value a series can have exists from the start (at 0), so a rate
# or an alert on it needs no "absent" case.
DEAD_LETTER_REASONS = ("invalid_json", "missing_id", "unreadable_headers", "schema",
                       "unknown_type", "too_large", "store_rejected", "internal")  # fmt: skip
REJECT_REASONS = ("auth", "protocol", "too_many", "server_full", "too_many_unauthenticated",
                  "replay_budget", "emfile")  # fmt: skip
REDIS_CALLS = ("ingest", "pending", "replay", "replay_count", "ack", "ping")
# The stages of the path (docs/operations.md, "Where the latency goes"): fine
# enough below 50 ms for a per-stage budget read from the buckets.
_STAGE_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                  0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # fmt: skip
_CALL_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # CPU, memory, open file descriptors
        PlatformCollector(registry=r)  # the Python version
        self.consumed = Counter("outbox_router_consumed", "Kafka records consumed", registry=r)
        self.recorded = Counter(
            "outbox_router_recorded", "Notifications newly recorded in Redis", registry=r
        )
        self.deduplicated = Counter(
            "outbox_router_deduplicated", "Duplicate events dropped", registry=r
        )
        self.dead_lettered = Counter(
            "outbox_router_dead_lettered", "Records sent to the DLQ", ["reason"], registry=r
        )
        self.replication_short = Counter(
            "outbox_router_redis_replication_short",
            "Batches sent again because fewer Redis replicas than OUTBOX_REDIS_WAIT_REPLICAS "
            "had them in time",
            registry=r,
        )
        self.slot_moving = Counter(
            "outbox_router_redis_slot_moving",
            "Batches sent again because a Redis Cluster slot they touch was moving between "
            "primaries (TRYAGAIN during a reshard)",
            registry=r,
        )
        self.replays = Counter("outbox_router_replays", "Resume replays served", registry=r)
        self.replayed = Counter("outbox_router_replayed", "Frames sent from history", registry=r)
        self.slow_dropped = Counter(
            "outbox_router_slow_clients_dropped", "Connections closed 1013", registry=r
        )
        self.rejected = Counter(
            "outbox_router_connections_rejected", "Connections refused", ["reason"], registry=r
        )
        self.connections = Gauge(
            "outbox_router_connections", "Open authenticated connections", registry=r
        )
        self.consumer_lag = Gauge(
            "outbox_router_kafka_consumer_lag",
            "Records between this replica's position and the end of each partition it owns",
            ["partition"], registry=r,
        )  # fmt: skip
        self.fanout_teachers = Gauge(
            "outbox_router_fanout_teachers",
            "Teachers this replica has registered (interest) or subscribed to (sharded); 0 with broadcast",
            registry=r,
        )
        self.redis_call = Histogram(
            "outbox_router_redis_call_seconds", "Duration of each call to Redis, by call",
            ["call"], buckets=_CALL_BUCKETS, registry=r,
        )  # fmt: skip
        for reason in DEAD_LETTER_REASONS:
            self.dead_lettered.labels(reason)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for call in REDIS_CALLS:
            self.redis_call.labels(call)
        # Updated on the event loop's thread only (see the module docstring).
        self.delivered = LoopCounter(
            "outbox_router_delivered", "Live notification frames written to sockets"
        )
        self.latency = LoopHistogram(
            "outbox_router_latency_seconds",
            "From the outbox row's created_at to the frame being written",
            (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
        )
        self.router_latency = LoopHistogram(
            "outbox_router_kafka_to_frame_seconds",
            "From the record being read from Kafka (by any replica) to the frame being written",
            _STAGE_BUCKETS,
        )
        self.fanout_received = LoopCounter(
            "outbox_router_fanout_received",
            "Records this replica received from the fan-out (every one with broadcast; only "
            "those of its teachers with interest fan-out)",
        )
        self.kafka_read = LoopHistogram(
            "outbox_router_kafka_read_seconds",
            "From the Kafka record's timestamp (set by Connect: when Debezium captured the row) "
            "to this replica reading the record: Connect's producer, the broker and the fetch",
            _STAGE_BUCKETS,
        )
        r.register(_LoopCollector([self.delivered, self.latency, self.router_latency,
                                   self.kafka_read, self.fanout_received]))  # fmt: skip
