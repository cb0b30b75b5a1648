"""Prometheus metrics of one router process (its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.delivered = Counter(
            "outbox_router_delivered", "Notification frames written to sockets", registry=r
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
        self.latency = Histogram(
            "outbox_router_latency_seconds",
            "From the outbox row's created_at to the frame being written",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=r,
        )
