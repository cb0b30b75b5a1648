"""One error path for the CLI: every expected failure becomes one line saying
what is wrong and what to do, with a documented exit code (pure; tested in
tests/unit/test_cli_errors.py and, command by command, in
tests/integration/test_cli_errors.py).

Exit codes: 0 success, 1 failure, 2 usage or configuration, 3 a dependency
(Postgres, Kafka, Kafka Connect, Redis, a router) is unreachable. A traceback is
printed only with ``--debug`` (or ``OUTBOX_DEBUG=1``).
"""

from __future__ import annotations

import contextlib
import errno
from typing import Any

from relay.supervisor import first_line

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups of task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def classify(exc: BaseException) -> tuple[str, int]:
    """The line to print and the exit code for ``exc``."""
    exc = _leaf(exc)
    from relay.errors import (
        ConnectUnreachableError,
        DatabaseUnavailableError,
        RelayError,
        SettingsError,
    )
    from relay.topics import TopicError
    from router.errors import ConfigError, RouterError, StoreUnavailableError
    from stack.errors import StackError

    if isinstance(exc, DatabaseUnavailableError | ConnectUnreachableError | StoreUnavailableError):
        return str(exc), EXIT_UNREACHABLE
    if isinstance(exc, TopicError):
        return str(exc), EXIT_UNREACHABLE if _kafka_unreachable(exc.reason) else EXIT_FAILURE
    if isinstance(exc, SettingsError | ConfigError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, RelayError | RouterError | StackError):
        return str(exc), EXIT_FAILURE
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return f"invalid {exc.title} settings: {settings_problems(exc)}", EXIT_USAGE
    pg = _postgres(exc)
    if pg is not None:
        return pg
    kafka = _kafka(exc)
    if kafka is not None:
        return kafka
    other = _network(exc)
    if other is not None:
        return other
    if isinstance(exc, OSError):
        if exc.errno == errno.EADDRINUSE:
            return (f"the address is already in use ({exc.strerror}); stop the process holding "
                    "the port or choose another one (OUTBOX_ROUTER_PORT, "
                    "OUTBOX_RELAY_HTTP_PORT)", EXIT_FAILURE)  # fmt: skip
        return f"{exc.strerror or exc}" + (
            f": {exc.filename}" if exc.filename else ""
        ), EXIT_FAILURE
    return (f"internal error ({type(exc).__name__}: {first_line(str(exc))[:200]}); rerun with "
            "--debug for the traceback and report it", EXIT_FAILURE)  # fmt: skip


def _postgres(exc: BaseException) -> tuple[str, int] | None:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency
        return None
    if not isinstance(exc, psycopg.Error):
        return None
    line = first_line(str(exc))
    if isinstance(exc, psycopg.ProgrammingError) and ("invalid dsn" in line or "missing" in line):
        return (f"OUTBOX_PG_DSN is not a Postgres DSN ({line}); use postgresql://USER@HOST:PORT/DB "
                "or key=value pairs", EXIT_USAGE)  # fmt: skip
    if isinstance(exc, psycopg.OperationalError):
        if exc.sqlstate in ("28P01", "28000") or "authentication failed" in line:
            return (f"Postgres refused the login ({line}); check the user and password in "
                    "OUTBOX_PG_DSN", EXIT_UNREACHABLE)  # fmt: skip
        if exc.sqlstate == "3D000" or "does not exist" in line:
            return (f"Postgres answered but {line}; check the database name in OUTBOX_PG_DSN",
                    EXIT_UNREACHABLE)  # fmt: skip
        return f"Postgres is unreachable ({line}); check OUTBOX_PG_DSN", EXIT_UNREACHABLE
    return f"Postgres refused: {line}", EXIT_FAILURE


def _kafka_unreachable(text: str) -> bool:
    t = text.lower()
    return any(s in t for s in ("transport", "timed out", "all_brokers_down", "resolve",
                                "connection refused", "_transport"))  # fmt: skip


def _kafka(exc: BaseException) -> tuple[str, int] | None:
    try:
        from confluent_kafka import KafkaException
    except ImportError:  # pragma: no cover - a dependency
        return None
    if not isinstance(exc, KafkaException):
        return None
    err: Any = exc.args[0] if exc.args else None
    text = err.str() if hasattr(err, "str") else str(exc)
    if _kafka_unreachable(text) or _kafka_unreachable(str(exc)):
        return (f"Kafka is unreachable ({text}); check OUTBOX_KAFKA_BOOTSTRAP",
                EXIT_UNREACHABLE)  # fmt: skip
    return f"Kafka refused: {text}", EXIT_FAILURE


def _network(exc: BaseException) -> tuple[str, int] | None:
    import httpx

    if isinstance(exc, httpx.TransportError):
        url = ""
        with contextlib.suppress(RuntimeError):  # no request attached
            url = f" {exc.request.url}"
        return (
            f"cannot reach{url} ({first_line(str(exc)) or type(exc).__name__})",
            EXIT_UNREACHABLE,
        )
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - a dependency
        return None
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return (
            f"Redis is unreachable ({first_line(str(exc))}); check OUTBOX_REDIS_URL",
            EXIT_UNREACHABLE,
        )
    return None


def settings_problems(exc: Any) -> str:
    """A settings ValidationError as ``OUTBOX_NAME: problem`` items, never
    echoing the values (one may be a secret)."""
    items = []
    for e in exc.errors(include_input=False):
        msg = str(e["msg"]).removeprefix("Value error, ")
        loc = "_".join(str(p) for p in e["loc"])
        items.append(f"OUTBOX_{loc.upper()}: {msg}" if loc else msg)
    return "; ".join(items)
