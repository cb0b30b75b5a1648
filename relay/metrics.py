"""Prometheus metrics of the relay (its own registry)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

CONNECTOR_STATES = ("RUNNING", "PAUSED", "STOPPED", "FAILED", "UNASSIGNED", "RESTARTING", "MISSING")


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.connect_call = Histogram(
            "outbox_relay_connect_call_seconds",
            "Duration of each request to the Kafka Connect REST API, by HTTP method",
            ["method"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        for method in ("GET", "PUT", "POST", "DELETE"):
            self.connect_call.labels(method)
        self.connector_state = Gauge("outbox_relay_connector_state", "1 for the current state",
                                     ["state"], registry=r)  # fmt: skip
        self.tasks = Gauge("outbox_relay_tasks", "Tasks by state", ["state"], registry=r)
        self.restarts = Counter(
            "outbox_relay_restarts", "Restarts of failed connector/tasks", registry=r
        )
        self.task_moves = Counter(
            "outbox_relay_task_moves",
            "Connector tasks seen running on another worker than before",
            registry=r,
        )
        self.applies = Counter(
            "outbox_relay_config_applies", "Config creates/re-applies", registry=r
        )
        self.slot_retained = Gauge(
            "outbox_relay_slot_retained_bytes", "WAL retained by the slot", registry=r
        )
        self.slot_lag = Gauge(
            "outbox_relay_slot_lag_bytes", "WAL not yet confirmed by the slot", registry=r
        )
        self.slot_active = Gauge(
            "outbox_relay_slot_active", "1 when a client reads the slot", registry=r
        )
        self.backlog = Gauge("outbox_relay_outbox_backlog", "Rows in the outbox table", registry=r)
        self.events_backlog = Gauge(
            "outbox_relay_domain_events_backlog",
            "Domain events in the outbox (not yet cleaned by the janitor), by topic",
            ["topic"], registry=r,
        )  # fmt: skip
        from contracts.events import EVENT_TOPICS

        for topic in EVENT_TOPICS:  # every series exists from the start
            self.events_backlog.labels(topic).set(0)
        self.heartbeat_age = Gauge(
            "outbox_relay_heartbeat_age_seconds", "Age of the last heartbeat", registry=r
        )
        self.janitor_deleted = Counter(
            "outbox_relay_janitor_deleted", "Outbox rows deleted", registry=r
        )
        self.gave_up = Gauge(
            "outbox_relay_restarts_exhausted",
            "1 when the connector kept failing and the relay stopped restarting it",
            registry=r,
        )
        self.healthy = Gauge("outbox_relay_healthy", "1 when the pipeline is healthy", registry=r)
        self.connect_up = Gauge(
            "outbox_relay_connect_reachable", "1 when Connect answers", registry=r
        )
