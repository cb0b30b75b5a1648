"""Errors of the relay (tree drawn in :mod:`relay`)."""

from __future__ import annotations


class RelayError(Exception):
    """Root of every error the relay raises."""


class SettingsError(RelayError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        env = "OUTBOX_" + self.field.upper()
        return f"setting {self.field} ({env}): {self.reason}"


class MigrationError(RelayError):
    def __init__(self, version: str, reason: str) -> None:
        super().__init__(version, reason)
        self.version = version
        self.reason = reason

    def __str__(self) -> str:
        return f"migration {self.version}: {self.reason}"


class ConnectError(RelayError):
    """Talking to the Kafka Connect REST API failed."""


class ConnectUnreachableError(ConnectError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"Kafka Connect at {self.url} is unreachable ({self.reason}); check "
            "OUTBOX_CONNECT_URL and that the worker is running"
        )


class ConnectApiError(ConnectError):
    def __init__(self, status_code: int, message: str, *, connector: str | None = None) -> None:
        super().__init__(status_code, message, connector)
        self.status_code = status_code
        self.message = message
        self.connector = connector

    def __str__(self) -> str:
        who = f" for connector {self.connector!r}" if self.connector else ""
        return f"Kafka Connect answered {self.status_code}{who}: {self.message}"


class ConnectorNotFoundError(ConnectApiError):
    def __str__(self) -> str:
        return (
            f"connector {self.connector!r} does not exist on this Connect cluster; "
            "create it with `outbox connector apply`"
        )


class DatabaseUnavailableError(RelayError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"Postgres is unreachable ({self.reason}); check OUTBOX_PG_DSN"
