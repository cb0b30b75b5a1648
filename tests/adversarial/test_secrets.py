"""No secret in any output: canary values in every secret setting, then every
CLI command's output and error paths, the daemons' logs and HTTP endpoints are
searched for them (real stack, real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from stack.procs import free_port
from stack.state import DEV_SESSION_TIMEOUT_MS, StackState
from tests.fix_stack import Database

CANARIES = {
    "dsn": "CanaryDsnPw-7f3a",
    "dsn_kv": "CanaryKvPw-91c2",
    "cdc": "CanaryCdc-55aa",
    "jaas": "CanaryJaas-0b1d",
    "ssl": "CanarySslKey-c4e8",
    "jwt": "CanaryJwtSecret-0123456789abcdef0123456789",
}


def _env(db: Database, stack: StackState, **extra: str) -> dict[str, str]:
    user_host = db.dsn.split("://", 1)[1]
    user, host = user_host.split("@", 1)
    e = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    e.update({
        "OUTBOX_PG_DSN": f"postgresql://{user}:{CANARIES['dsn']}@{host}",
        "OUTBOX_CONNECT_URL": stack.connect_url,
        "OUTBOX_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "OUTBOX_REDIS_URL": stack.redis_url,
        "OUTBOX_CDC_PASSWORD": CANARIES["cdc"],
        "OUTBOX_CONNECTOR_OVERRIDES": json.dumps({
            "producer.override.sasl.jaas.config": f"x required password=\"{CANARIES['jaas']}\";",
            "producer.override.ssl.key.password": CANARIES["ssl"],
        }),
        "OUTBOX_JWT_SECRET": CANARIES["jwt"],
        "OUTBOX_CONNECTOR_NAME": f"canary-{db.name}",
        "OUTBOX_RELAY_HTTP_PORT": "0",
    })  # fmt: skip
    e.update(extra)
    return e


def _run(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "outbox.cli", *args], env=env,
                         capture_output=True, text=True, timeout=90, check=False)  # fmt: skip
    return out.stdout + out.stderr


def _leaks(text: str) -> list[str]:
    return [name for name, v in CANARIES.items() if v in text]


def test_no_command_shows_a_secret(stack: StackState, db: Database, tmp_path: Path) -> None:
    env = _env(db, stack)
    host_port = db.dsn.split("@", 1)[1].split("/", 1)[0]
    kv_dsn = (f"host={host_port.split(':')[0]} port={host_port.split(':')[1]} "
              f"dbname={db.name} user=postgres password={CANARIES['dsn_kv']}")  # fmt: skip
    closed = f"127.0.0.1:{free_port()}"
    variants = {
        "normal": env,
        "key=value DSN": {**env, "OUTBOX_PG_DSN": kv_dsn},
        "Postgres down": {**env, "OUTBOX_PG_DSN": f"postgresql://u:{CANARIES['dsn']}@{closed}/x"},
        "Postgres down, key=value": {**env, "OUTBOX_PG_DSN": f"host=127.0.0.1 port={closed.split(':')[1]} password={CANARIES['dsn_kv']}"},
        "Connect down": {**env, "OUTBOX_CONNECT_URL": f"http://{closed}"},
        "bad setting": {**env, "OUTBOX_SUPERVISE_INTERVAL_S": "-1"},
    }  # fmt: skip
    commands = [
        ["connector", "render"], ["connector", "apply", "--dry-run"], ["connector", "status"],
        ["relay", "status", "--one-shot"], ["relay", "status", "--one-shot", "--json"],
        ["doctor"], ["doctor", "--json"], ["db", "status"],
    ]  # fmt: skip
    # Every command with the secrets in place; the error paths with the commands
    # that reach the broken part.
    errors = [
        ["connector", "status"],
        ["relay", "status", "--one-shot"],
        ["doctor"],
        ["db", "status"],
    ]
    plan = [(v, c) for v in ("normal", "key=value DSN") for c in commands]
    plan += [(v, c) for v in variants if v not in ("normal", "key=value DSN") for c in errors]
    seen: dict[str, list[str]] = {}
    outputs = 0
    for vname, cmd in plan:
        text = _run(variants[vname], *cmd)
        outputs += 1
        if leaks := _leaks(text):
            seen[f"{vname}: {' '.join(cmd)}"] = leaks
    assert outputs == len(plan) == 32
    assert "********" in _run(env, "connector", "render")  # the secrets are there, masked
    assert not seen, seen


def test_daemons_logs_and_endpoints_show_no_secret(stack: StackState, db: Database,
                                                   tmp_path: Path) -> None:  # fmt: skip
    relay_port, router_port = free_port(), free_port()
    env = _env(db, stack, OUTBOX_CONNECT_URL=f"http://127.0.0.1:{free_port()}",
               OUTBOX_RELAY_HTTP_PORT=str(relay_port), OUTBOX_ROUTER_PORT=str(router_port),
               OUTBOX_TOPIC=f"canary.{db.name}", OUTBOX_KAFKA_SESSION_TIMEOUT_MS=str(DEV_SESSION_TIMEOUT_MS),
               OUTBOX_KAFKA_MAX_POLL_INTERVAL_MS="10000", OUTBOX_GROUP_ID=f"canary-{db.name}",
               OUTBOX_REDIS_PREFIX=f"canary{db.name}")  # fmt: skip
    logs = {n: tmp_path / f"{n}.log" for n in ("relay", "router")}
    procs = {}
    for name, args in (("relay", ["relay", "run", "--log-level", "DEBUG"]),
                       ("router", ["router", "run", "--log-level", "DEBUG"])):  # fmt: skip
        with open(logs[name], "wb") as f:
            procs[name] = subprocess.Popen([sys.executable, "-m", "outbox.cli", *args], env=env,
                                           stdout=f, stderr=subprocess.STDOUT)  # fmt: skip
    bodies = []
    try:
        for port, paths in ((relay_port, ["/healthz", "/metrics"]),
                            (router_port, ["/healthz", "/readyz", "/metrics", "/"])):  # fmt: skip
            deadline = time.monotonic() + 60
            for path in paths:
                while True:
                    try:
                        bodies.append(httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).text)
                        break
                    except httpx.HTTPError:
                        assert time.monotonic() < deadline, f"no answer on {port}{path}"
                        time.sleep(0.3)
        time.sleep(2)  # a few supervision rounds against the unreachable Connect
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(30)
    text = "\n".join(bodies) + "".join(p.read_text(errors="replace") for p in logs.values())
    assert len(bodies) == 6
    assert "Kafka Connect" in logs["relay"].read_text()  # it did log the outage
    assert not _leaks(text), _leaks(text)
