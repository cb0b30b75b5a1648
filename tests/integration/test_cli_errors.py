"""One error path: each expected failure of the CLI is one `error:` line that
says what is wrong and what to do, with its documented exit code (1 failure,
2 usage or configuration, 3 a dependency unreachable) and no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stack.procs import free_port
from stack.state import StackState

SECRET = "cli-errors-secret-0123456789abcdef0123"


@contextmanager
def busy_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    closed = str(free_port())
    e.update({"OUTBOX_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed}",
              "OUTBOX_CONNECT_URL": f"http://127.0.0.1:{closed}",
              "OUTBOX_REDIS_URL": f"redis://127.0.0.1:{closed}/0",
              "OUTBOX_PG_DSN": f"postgresql://postgres@127.0.0.1:{closed}/x",
              "OUTBOX_JWT_SECRET": SECRET, "OUTBOX_START_TIMEOUT_S": "2"}, **env)  # fmt: skip
    return subprocess.run([sys.executable, "-m", "outbox.cli", *args], env=e, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


# (name, args, env, exit code, text the error line must hold)
CASES: list[tuple[str, list[str], dict[str, str], int, str]] = [
    ("a DSN that is not one", ["db", "migrate"], {"OUTBOX_PG_DSN": "not a dsn"}, 2,
     "not a Postgres DSN"),
    ("Postgres down", ["db", "migrate"], {}, 3, "Postgres is unreachable"),
    ("Kafka down", ["dlq", "list"], {}, 3, "Kafka is unreachable"),
    ("Connect down", ["connector", "status"], {}, 3, "Kafka Connect"),
    ("Redis down at router start", ["router", "run"], {"OUTBOX_ROUTER_PORT": "0"}, 3,
     "Redis is unreachable"),
    ("tail to no router", ["tail", "--teacher", "t"], {"OUTBOX_ROUTER_PORT": str(free_port())}, 3,
     "cannot reach"),
    ("tail --url foo", ["tail", "--teacher", "t", "--url", "foo"], {}, 2, "not a WebSocket URL"),
    ("tail --resume garbage", ["tail", "--teacher", "t", "--resume", "garbage"], {}, 2,
     "not a position"),
    ("token --teacher ''", ["token", "--teacher", ""], {}, 2, "--teacher must not be empty"),
    ("token without a key", ["token", "--teacher", "t"], {"OUTBOX_JWT_SECRET": ""}, 2, "no key"),
    ("a short HS256 secret", ["router", "run"], {"OUTBOX_JWT_SECRET": "short"}, 2, "32"),
]  # fmt: skip

USAGE: list[tuple[str, list[str]]] = [
    ("token --ttl -5", ["token", "--teacher", "t", "--ttl", "-5"]),
    ("dlq list --limit -1", ["dlq", "list", "--limit", "-1"]),
    ("stack logs -n -1", ["stack", "logs", "-n", "-1"]),
    ("stack up --redis-replicas 2 without a cluster", ["stack", "up", "--redis-replicas", "2"]),
    ("stack up --redis-replicas 9", ["stack", "up", "--redis", "cluster", "--redis-replicas", "9"]),
    ("an unknown command", ["nope"]),
]


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    assert "%3|" not in text and "FAIL [rdkafka" not in text, text
    # "error: ..." from a command; a daemon says it as an ERROR log line (JSON
    # under --log-format json)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:") or " ERROR " in ln]
    assert len(errors) == 1, out.stderr
    return errors[0]


@pytest.fixture(scope="module")
def outcomes() -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case of the two tables below, run four at a time (most of each is
    the interpreter starting, or a dependency's timeout running out)."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(c[0], c[1], c[2]) for c in CASES] + [(u[0], u[1], {}) for u in USAGE]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run, args, **env) for name, args, env in jobs}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize(("name", "args", "env", "code", "text"), CASES, ids=[c[0] for c in CASES])
def test_expected_failures_are_one_line(name: str, args: list[str], env: dict[str, str], code: int,
                                        text: str, outcomes: dict[str, Any]) -> None:  # fmt: skip
    out = outcomes[name]
    line = _one_error_line(out)
    assert out.returncode == code, (name, out.returncode, out.stderr)
    assert text in line, line


@pytest.mark.parametrize(("name", "args"), USAGE, ids=[u[0] for u in USAGE])
def test_usage_errors_exit_2_without_a_traceback(name: str, args: list[str],
                                                 outcomes: dict[str, Any]) -> None:  # fmt: skip
    out = outcomes[name]
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert "Try 'outbox" in out.stderr


@pytest.mark.parametrize("command", [["router", "run"], ["relay", "run"]])
def test_a_busy_port_is_one_line(stack: StackState, command: list[str]) -> None:
    with busy_port() as port:
        out = run(command, OUTBOX_ROUTER_PORT=str(port), OUTBOX_RELAY_HTTP_PORT=str(port),
                  OUTBOX_REDIS_URL=stack.redis_url, OUTBOX_PG_DSN=stack.pg_dsn,
                  OUTBOX_KAFKA_BOOTSTRAP=stack.kafka_bootstrap, OUTBOX_CONNECT_URL=stack.connect_url,
                  OUTBOX_CONNECTOR_NAME=f"busy-{port}")  # fmt: skip
    line = _one_error_line(out)
    assert out.returncode == 1 and "already in use" in line, out.stderr


def test_a_database_that_does_not_exist(stack: StackState) -> None:
    dsn = stack.pg_dsn.rsplit("/", 1)[0] + "/no_such_db"
    out = run(["db", "migrate"], OUTBOX_PG_DSN=dsn)
    line = _one_error_line(out)
    assert out.returncode == 3 and "does not exist" in line, line


def test_version_and_short_help() -> None:
    out = run(["--version"])
    assert out.returncode == 0 and out.stdout.startswith("outbox ")
    out = run(["relay", "status", "-h"])
    assert out.returncode == 0 and "Usage: outbox relay status" in out.stdout


def test_debug_shows_the_traceback() -> None:
    out = run(["--debug", "dlq", "list"])
    assert out.returncode != 0 and "Traceback" in out.stderr


@pytest.mark.parametrize("args", [["connector", "status", "--json"], ["db", "status", "--json"],
                                  ["relay", "status", "--json", "--one-shot"]])  # fmt: skip
def test_json_status_commands_answer_json_on_errors_too(args: list[str]) -> None:
    import json

    out = run(args)
    assert out.returncode in (1, 3), out.stderr
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)
    if "error" in doc:
        assert doc["exit_code"] == out.returncode and doc["error"]
    else:  # relay status reports the unreachable dependencies as its status
        assert doc["health"] == "unhealthy"


def test_one_shot_status_says_what_is_missing(stack: StackState) -> None:
    out = run(["relay", "status", "--one-shot"], OUTBOX_CONNECT_URL=stack.connect_url,
              OUTBOX_PG_DSN=stack.pg_dsn, OUTBOX_CONNECTOR_NAME=f"absent-{free_port()}")  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "does not exist; `outbox connector apply` creates it" in out.stdout
    assert "creating it" not in out.stdout  # the one-shot command creates nothing
    assert "run `outbox db migrate`" in out.stdout  # the stack's own database is not migrated
    assert "Traceback" not in out.stderr and out.stderr.strip() == ""


def test_one_shot_status_names_an_unreachable_database_once(stack: StackState) -> None:
    out = run(["relay", "status", "--one-shot"], OUTBOX_CONNECT_URL=stack.connect_url,
              OUTBOX_PG_DSN=f"postgresql://postgres@127.0.0.1:{free_port()}/outbox",
              OUTBOX_CONNECTOR_NAME=f"absent-{free_port()}")  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    problems = [ln for ln in out.stdout.splitlines() if ln.startswith("problem")]
    assert len([p for p in problems if "Connection refused" in p]) == 1, out.stdout
    assert "cannot read slot health from Postgres" in out.stdout
