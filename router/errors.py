"""Errors of the router (tree drawn in :mod:`router`)."""

from __future__ import annotations

from contracts.protocol import CloseCode


class RouterError(Exception):
    """Root of every error the router raises."""


class ConfigError(RouterError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"setting {self.field} (OUTBOX_{self.field.upper()}): {self.reason}"


class AuthError(RouterError):
    """A token was refused; the connection closes with ``code`` and ``reason``."""

    def __init__(self, reason: str, code: CloseCode = CloseCode.UNAUTHORIZED) -> None:
        super().__init__(reason, code)
        self.reason = reason
        self.code = code

    def __str__(self) -> str:
        return f"{self.reason} (close {int(self.code)})"


class PoisonMessageError(RouterError):
    """A Kafka message that cannot be routed; it goes to the dead-letter topic."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class StoreUnavailableError(RouterError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"Redis is unreachable ({self.reason}); check OUTBOX_REDIS_URL"


class ReplicationShortError(StoreUnavailableError):
    """A batch is on the primary but fewer of its replicas than
    ``OUTBOX_REDIS_WAIT_REPLICAS`` acknowledged it in time (Redis' ``WAIT``):
    its offsets are not committed and it is sent again."""

    def __init__(self, node: str, replicas: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(f"{node}: {replicas} of {wanted} replicas")
        self.node = node
        self.replicas = replicas
        self.wanted = wanted
        self.timeout_ms = timeout_ms

    def __str__(self) -> str:
        return (f"Redis {self.node} recorded the batch but only {self.replicas} of the "
                f"{self.wanted} replicas OUTBOX_REDIS_WAIT_REPLICAS asks for had it within "
                f"{self.timeout_ms} ms; check the replicas (INFO replication) or lower the "
                "setting")  # fmt: skip


class SlotMovingError(StoreUnavailableError):
    """A Redis Cluster slot of the batch is moving between primaries (a reshard):
    its keys are split between the two, so Redis answers ``TRYAGAIN`` and runs
    nothing of the call. The batch is sent again shortly; it goes through once
    the slot has moved."""

    def __str__(self) -> str:
        return (f"a Redis Cluster slot of the batch is moving between primaries ({self.reason}); "
                "the batch is sent again until the slot has moved. If this lasts, a reshard "
                "has stopped half-way: finish it (redis-cli --cluster fix)")  # fmt: skip


class StoreFullError(StoreUnavailableError):
    """Redis is at its ``maxmemory`` and evicts nothing (``noeviction``): it
    refuses writes (OOM). Nothing of the batch is refused as bad; it is sent
    again until Redis has room."""

    def __str__(self) -> str:
        return (f"Redis is out of memory ({self.reason}); free memory or raise its maxmemory: "
                "the batch is sent again until Redis takes it")  # fmt: skip
