"""Settings of the router process (env prefix ``OUTBOX_``), read once by the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts.notification import DEAD_LETTER_TOPIC, NOTIFICATION_TOPIC

# Redis connections: at most OUTBOX_REDIS_MAX_CONNECTIONS per Redis node (redis-py
# raises rather than waits beyond its pool's bound). A few are kept for the
# router's own work (the ingest pipeline, the fan-out subscription, interest
# registrations, readiness pings); the rest serve the connections' calls.
REDIS_MAX_CONNECTIONS = 64
REDIS_RESERVED_CONNECTIONS = 8


def session_calls(max_connections: int) -> int:
    """How many of the teachers' connections may call Redis at once."""
    return max_connections - REDIS_RESERVED_CONNECTIONS


# A subscription's node that answers none of this many pings in a row (one each
# OUTBOX_REDIS_HEALTH_CHECK_S) is given up on: hung, or cut off without its
# connection closing.
SILENT_PINGS = 3


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OUTBOX_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic: str = NOTIFICATION_TOPIC
    dlq_topic: str = DEAD_LETTER_TOPIC
    group_id: str = "outbox-router"
    # Consumer-group timeouts; lower them in dev/tests for fast rebalances.
    kafka_session_timeout_ms: int = 45000
    kafka_max_poll_interval_ms: int = 300000
    batch_max: int = Field(default=500, ge=1, le=10000)
    # Redis key prefix: lets tests and tenants share one Redis. No braces: the
    # keys carry a Redis Cluster hash tag of their own (router/store.py).
    redis_prefix: str = Field(default="outbox", min_length=1, pattern=r"^[^{}\s]+$")
    # A Redis Cluster (OUTBOX_REDIS_URL is any one of its nodes): batches are
    # split by slot, pub/sub goes through one node at a time.
    redis_cluster: bool = False
    # Replicas that must have a batch before its Kafka offsets are committed
    # (Redis' WAIT after each batch, on the connection that wrote it). 0: the
    # primary's answer is enough, and a failover can lose the last writes of a
    # primary (docs/architecture.md, "Redis Cluster and failover"). While fewer
    # replicas answer within the timeout, ingest waits and nothing is committed.
    redis_wait_replicas: int = Field(default=0, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(default=1000, ge=1, le=60000)
    # A Redis call (and a connection attempt) that gets no answer in this long
    # fails, as if the node were down: a node that hangs or is cut off without
    # closing its connections (a partition) is then failed over from, instead
    # of holding ingest for ever. Longer than OUTBOX_REDIS_WAIT_TIMEOUT_MS.
    redis_timeout_s: float = Field(default=5.0, gt=0, le=300)
    # Each subscription pings its node this often when nothing else arrives; a
    # node that answers nothing for SILENT_PINGS of these is given up on, and the
    # connections it served catch up from wherever the subscription is made again.
    redis_health_check_s: float = Field(default=10.0, gt=0, le=300)
    # Connections to each Redis node (see REDIS_MAX_CONNECTIONS above).
    redis_max_connections: int = Field(default=REDIS_MAX_CONNECTIONS,
                                       ge=2 * REDIS_RESERVED_CONNECTIONS, le=10000)  # fmt: skip
    # broadcast: every replica receives every notification on one channel;
    # interest: a replica registers the teachers connected to it and receives
    # only theirs, on a channel of its own; sharded: a replica subscribes
    # (SSUBSCRIBE) to the channel of each teacher connected to it, in that
    # teacher's slot, so a cluster carries each message only within its shard
    # (docs/architecture.md, "Fan-out").
    fanout: Literal["broadcast", "interest", "sharded"] = "broadcast"
    # Interest fan-out: how long a replica's registration of a teacher lasts
    # unless renewed (renewed every quarter of it). A replica that died without
    # withdrawing is published to for at most this long.
    interest_lease_s: float = Field(default=60.0, ge=2.0, le=3600.0)

    router_host: str = "127.0.0.1"
    router_port: int = Field(default=8765, ge=0, le=65535)
    # With an admin port, /metrics is served there only (and /healthz, /readyz
    # on both), so the public WebSocket port exposes no internals.
    admin_host: str = "127.0.0.1"
    admin_port: int | None = Field(default=None, ge=0, le=65535)
    # Router processes on this machine sharing router_port (SO_REUSEPORT); each
    # is a full replica (`outbox router run --workers N`, docs/architecture.md).
    workers: int = Field(default=1, ge=1, le=64)
    # Set for each worker by the parent: bind with SO_REUSEPORT, and which one it is.
    reuse_port: bool = False
    worker_index: int = Field(default=0, ge=0)
    # HS256 secret, or a PEM public key for RS256/ES256.
    jwt_secret: SecretStr | None = None
    jwt_secret_file: Path | None = None  # the secret from a file (container secrets)
    jwt_public_key: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = ["HS256"]
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = 10.0
    # Origins allowed to open a WebSocket; empty = any (dev only).
    allowed_origins: Annotated[list[str], NoDecode] = []

    # How long the router waits for Redis at start before giving up (exit 3).
    start_timeout_s: float = Field(default=30.0, gt=0)
    auth_timeout_s: float = 5.0
    max_frame_bytes: int = 16 * 1024
    max_connections_per_teacher: int = Field(default=10, ge=1)
    # Every open WebSocket of this process; past it /ws answers 503.
    max_connections: int = Field(default=20000, ge=1)
    # Connections of one address still authenticating; past it they close 1013.
    max_unauthenticated_per_ip: int = Field(default=256, ge=1)
    # Notifications a teacher's connections on this process may have replayed per
    # second, pending items and history, on connect and by `resume` frames (the
    # burst is one whole history and the pending cap); reconnecting buys none.
    replay_rate_per_s: float = Field(default=100.0, gt=0)
    send_queue_max: int = Field(default=1000, ge=1)
    # Frames a teacher's connections on this process may send per second after
    # `auth`, together (the burst: at once); reconnecting buys none.
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 40
    max_errors: int = 5
    # permessage-deflate: notifications are small, so compression costs more CPU
    # than it saves on most networks; turn it on for slow links.
    ws_compression: bool = False
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0

    dedupe_ttl_s: int = 7 * 24 * 3600
    history_maxlen: int = Field(default=1000, ge=10)
    history_ttl_s: int = 7 * 24 * 3600
    # Pending action items kept per teacher; past it new ones are delivered live
    # and kept in history, but not re-sent on connect (docs/protocol.md).
    pending_max: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _redis_timeouts(self) -> RouterSettings:
        if self.redis_wait_replicas and self.redis_timeout_s * 1000 <= self.redis_wait_timeout_ms:
            raise ValueError(
                f"OUTBOX_REDIS_TIMEOUT_S ({self.redis_timeout_s:g} s) must be longer than "
                f"OUTBOX_REDIS_WAIT_TIMEOUT_MS ({self.redis_wait_timeout_ms} ms): Redis answers "
                "WAIT only when that runs out; raise the first or lower the second"
            )
        return self

    @model_validator(mode="after")
    def _secret_file(self) -> RouterSettings:
        if self.jwt_secret_file is not None:
            if self.jwt_secret is not None and self.jwt_secret.get_secret_value():
                raise ValueError("set OUTBOX_JWT_SECRET or OUTBOX_JWT_SECRET_FILE, not both")
            try:
                text = self.jwt_secret_file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"cannot read the secret file {self.jwt_secret_file}: "
                                 f"{exc.strerror}") from None  # fmt: skip
            self.jwt_secret = SecretStr(text)
        return self

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: dict[str, object]) -> dict[str, object]:
        for key in ("jwt_algorithms", "allowed_origins"):
            v = data.get(key)
            if isinstance(v, str):
                data[key] = [x.strip() for x in v.split(",") if x.strip()]
        return data
