"""Helpers shared by the CLI modules: errors, output format, logging."""

from __future__ import annotations

import json
import logging
import sys
import time
from enum import StrEnum
from typing import Annotated, Any

import typer

from contracts.display import printable
from relay import secrets


class LogFormat(StrEnum):
    human = "human"
    json = "json"


JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
LogFormatOpt = Annotated[
    LogFormat, typer.Option("--log-format", help="human (default) or json lines.")
]
LogLevelOpt = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")]


# Secret values this process knows (passwords, the JWT secret): scrubbed from
# every log line and error message, whatever quoted them.
_SECRETS: set[str] = set()


def register_secrets(*values: str | None) -> None:
    _SECRETS.update(v for v in values if v)


def scrub(text: str) -> str:
    return secrets.scrub(text, _SECRETS)


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            msg = record.getMessage()
            clean = scrub(msg)
            if clean != msg:
                record.msg, record.args = clean, None
        return True


def settings_error(what: str, exc: Any) -> typer.Exit:
    """An invalid-settings exit that never echoes the values (one may be a secret)."""
    from outbox.errors import settings_problems

    report_error(f"invalid {what} settings: {settings_problems(exc)}", 2)
    return typer.Exit(2)


def fail(exc: Exception | str, code: int | None = None) -> typer.Exit:
    """Print one ``error:`` line and return the exit to raise: for an exception
    its class says the code (``outbox.errors.classify``); a message is 1 unless
    told otherwise."""
    if isinstance(exc, Exception):
        from outbox.errors import classify

        text, classified = classify(exc)
        code = classified if code is None else code
    else:
        text = exc
    code = 1 if code is None else code
    report_error(one_line(scrub(text)), code)
    return typer.Exit(code)


# Set by the entry point when the command was asked for --json: an error is then
# also a JSON object on stdout, {"error": ..., "exit_code": ...}, so a script
# reading the output gets the same shape whatever happened.
JSON_ERRORS = False


def report_error(line: str, code: int) -> None:
    typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
    if JSON_ERRORS:
        typer.echo(json.dumps({"error": line, "exit_code": code}))


def one_line(text: str) -> str:
    """A message on one line (a driver's multi-line text joined)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class _HumanFormatter(logging.Formatter):
    """One line per message, whatever it quotes: a record's or a client's text
    with a newline or a terminal escape in it is written escaped (a traceback
    after the line stays as it is)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


# librdkafka's own lines: a daemon logs them; a one-shot command (dlq list,
# connector apply) ends with one error line that says the same (`--debug` shows them).
KAFKA_LOGGERS = ("relay.librdkafka", "router.librdkafka")
# What a one-shot command reports in its own output (relay status shows the
# daemon's warnings as "problem" rows).
ONE_SHOT_QUIET = (*KAFKA_LOGGERS, "relay.daemon")


def quiet_one_shot(debug: bool) -> None:
    """Logging for a one-shot command until a daemon calls :func:`setup_logging`."""
    if not debug:
        for name in ONE_SHOT_QUIET:
            logging.getLogger(name).setLevel(logging.CRITICAL)


def setup_logging(fmt: LogFormat = LogFormat.human, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt is LogFormat.json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_HumanFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_ScrubFilter())
    for name in ONE_SHOT_QUIET:
        logging.getLogger(name).setLevel(logging.NOTSET)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # One line per HTTP request to Kafka Connect is for debugging, not INFO.
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Rows as a plain aligned table (rich, without borders, so it stays
    greppable and copy-pasteable)."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    t = Table(*headers, box=None, show_edge=False, pad_edge=False, header_style="bold")
    for r in rows:
        t.add_row(*(str(x) for x in r))
    out = StringIO()
    Console(file=out, width=200, color_system=None, highlight=False).print(t)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())
