"""Settings of the embedded stack, read once by the CLI."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from stack.state import DEV_SESSION_TIMEOUT_MS


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "outbox-relay" / "stack"


def _default_state_dir() -> Path:
    # Under the temp dir, not $HOME: the unprivileged Postgres user must be able
    # to reach its data directory, and root's home is usually closed to others.
    return Path(tempfile.gettempdir()) / f"outbox-stack-{os.getuid()}"


class StackSettings(BaseSettings):
    """Where the stack keeps artifacts and state, and which binaries it uses."""

    model_config = SettingsConfigDict(env_prefix="OUTBOX_STACK_", extra="ignore")

    cache_dir: Path = Field(default_factory=_default_cache_dir)
    state_dir: Path = Field(default_factory=_default_state_dir)
    pg_bin_dir: Path = Path("/usr/lib/postgresql/15/bin")
    redis_server: str = "redis-server"
    java: str = "java"
    jetty_dir: Path = Path("/usr/share/java")
    pg_user: str = "outbox-stack"
    # `single`: one Redis; `cluster`: a Redis Cluster of 3 primaries, each with
    # `redis_replicas` replicas (2 keep a replica behind a promoted one, which a
    # router waiting for replicas needs: OUTBOX_REDIS_WAIT_REPLICAS).
    redis: Literal["single", "cluster"] = "single"
    redis_replicas: int = Field(default=1, ge=1, le=3)
    # Kafka Connect workers in the stack's one group (a Connect cluster from 2).
    connect_workers: int = Field(default=1, ge=1, le=4)
    # Partitions of the notification topic created by `stack up`.
    topic_partitions: int = 6
    connect_heap: str = "512m"
    # The Connect JVM's collector and JIT, split like a shell line. C1 only
    # (TieredStopAtLevel=1) warms up for less CPU; the full JIT costs about
    # 10 s more CPU in its first minute under load and then about 15 % less per
    # record (docs/operations.md, "Kafka Connect's JVM on the dev stack").
    connect_jvm_options: str = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
    # The Connect workers' group session (connect-config/worker.properties says
    # why it is short); the heartbeat is a third of it.
    connect_session_timeout_ms: int = Field(default=DEV_SESSION_TIMEOUT_MS, ge=1000, le=300_000)
    # Postgres' wal_level; `replica` exists only to test `outbox doctor`.
    pg_wal_level: str = "logical"
