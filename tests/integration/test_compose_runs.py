"""compose.yaml would come up: `docker-compose config`'s resolved services (the
project's image, their commands, environments, secrets and mounts) run as
local processes against the embedded stack, hosts mapped to its ports, in
compose's start order, and a committed notification reaches a browser client.

No container engine is involved: what is proven is that the configuration the
image receives is enough (the roles, passwords, topics and settings), which is
where a compose file that "validates" usually fails to come up.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import sql
from websockets.asyncio.client import connect

from router.auth import mint
from stack.procs import free_port
from stack.state import DEV_SESSION_TIMEOUT_MS, StackState
from tests.fix_stack import Database

ROOT = Path(__file__).resolve().parents[2]
ORDER = ("migrate", "relay", "router")  # compose's depends_on order for these


def _rendered(tmp: Path) -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: `apt-get install docker-compose`")
    for name in ("compose.yaml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp / name)
    shutil.copytree(ROOT / "connect-config", tmp / "connect-config")
    shutil.copytree(ROOT / "deploy", tmp / "deploy")
    shutil.copy(ROOT / ".env.example", tmp / ".env")
    out = subprocess.run([exe, "-f", "compose.yaml", "config"], cwd=tmp, check=True,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    data: dict[str, Any] = yaml.safe_load(out.stdout)
    return data


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, limit_s: float,
          ok: Any = None) -> None:  # fmt: skip
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"{url}: process exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200 and (ok is None or ok(r)):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready in {limit_s:.0f} s:\n{log.read_text()[-3000:]}")


def test_compose_services_run_and_deliver(stack: StackState, tmp_path: Path) -> None:
    compose = _rendered(tmp_path)
    services = compose["services"]
    db = Database(stack, migrated=False)
    run = uuid.uuid4().hex[:8]
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    for name in compose["secrets"]:
        (secret_dir / name).write_text(secrets.token_hex(24) + "\n")
    owner = services["postgres"]["environment"]["POSTGRES_USER"]
    owner_pw = (secret_dir / "postgres_password").read_text().strip()
    pg_port = db.port
    procs: list[tuple[subprocess.Popen[bytes], Any]] = []
    ports = {"8765": str(free_port()), "9108": str(free_port())}

    def local(value: str) -> str:
        """A compose value, with its hosts, ports, secrets and mounts mapped here."""
        v = value.replace("postgres:5432/" + services["postgres"]["environment"]["POSTGRES_DB"],
                          f"127.0.0.1:{pg_port}/{db.name}")  # fmt: skip
        v = v.replace("kafka:9092", stack.kafka_bootstrap)
        v = v.replace("http://connect:8083", stack.connect_url)
        v = v.replace("redis://redis:6379/0", stack.redis_url)
        v = v.replace("/run/secrets/", f"{secret_dir}/")
        v = v.replace("/etc/outbox/connector.json", str(ROOT / "connect-config" / "connector.json"))
        if v == "0.0.0.0":
            v = "127.0.0.1"
        if v == "postgres":  # OUTBOX_CONNECTOR_PG_HOST: how Connect reaches Postgres
            v = "127.0.0.1"
        return ports.get(v, v)

    # What the postgres image does with POSTGRES_USER and POSTGRES_PASSWORD_FILE.
    with psycopg.connect(db.admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(owner), sql.Literal(owner_pw)))  # fmt: skip
    # Isolation on the shared test stack only (names other tests cannot clash with).
    isolate = {"OUTBOX_TOPIC": f"compose.{run}", "OUTBOX_GROUP_ID": f"compose-{run}",
               "OUTBOX_SLOT_NAME": f"compose_{run}", "OUTBOX_CONNECTOR_NAME": f"compose-{run}",
               "OUTBOX_REDIS_PREFIX": f"c{run}", "OUTBOX_TOPIC_PREFIX": f"c{run}",
               "OUTBOX_DLQ_TOPIC": f"compose.{run}.dlq", "OUTBOX_KAFKA_SESSION_TIMEOUT_MS": str(DEV_SESSION_TIMEOUT_MS)}  # fmt: skip
    try:
        for name in ORDER:
            svc = services[name]
            env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
            env.update({k: local(str(v)) for k, v in svc["environment"].items()})
            env.update(isolate)
            cmd = [str(x) for x in svc["command"]]
            assert cmd[0] == "outbox", cmd
            log = tmp_path / f"{name}.log"
            with log.open("wb") as f:
                p = subprocess.Popen([sys.executable, "-m", "outbox.cli", *cmd[1:]], env=env,
                                     stdout=f, stderr=subprocess.STDOUT)  # fmt: skip
            procs.append((p, env))
            if name == "migrate":  # service_completed_successfully
                assert p.wait(120) == 0, log.read_text()
                assert "set the password of outbox_cdc" in log.read_text()
                assert "set the password of outbox_relay" in log.read_text()
            elif name == "relay":
                _wait(f"http://127.0.0.1:{env['OUTBOX_RELAY_HTTP_PORT']}/readyz", p, log, 120)
            else:
                _wait(f"http://127.0.0.1:{env['OUTBOX_ROUTER_PORT']}/readyz", p, log, 60)
        router_env = procs[-1][1]
        jwt_secret = Path(router_env["OUTBOX_JWT_SECRET_FILE"]).read_text().strip()
        token = mint(jwt_secret, "compose-teacher", 600, audience=router_env["OUTBOX_JWT_AUDIENCE"],
                     now=time.time())  # fmt: skip

        async def deliver() -> dict[str, Any]:
            url = f"ws://127.0.0.1:{router_env['OUTBOX_ROUTER_PORT']}/ws"
            async with connect(url) as ws:
                await ws.send(json.dumps({"type": "auth", "token": token}))
                while json.loads(await ws.recv())["type"] != "replay_done":
                    pass
                # the service's transaction, as the owner (compose's POSTGRES_USER)
                dsn = f"postgresql://{owner}:{owner_pw}@127.0.0.1:{pg_port}/{db.name}"
                with psycopg.connect(dsn) as conn:
                    conn.execute("SELECT outbox.notify_teacher('compose-teacher', "
                                 "'class_created', '{\"class_name\": \"7B\"}', 'req-c', NULL, "
                                 "'class-7b')")  # fmt: skip
                    conn.commit()
                while True:
                    f = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if f["type"] == "notification":
                        return f

        # A loop of its own: asyncio.run() would unset the event loop the async
        # tests after this one run on.
        loop = asyncio.new_event_loop()
        try:
            frame = loop.run_until_complete(deliver())
        finally:
            loop.close()
        assert frame["notification"]["teacher_id"] == "compose-teacher"
        assert frame["notification"]["payload"] == {"class_name": "7B"}
    finally:
        for p, _ in reversed(procs):
            if p.poll() is None:  # ours: stopped through its Popen (its pid)
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        httpx.delete(f"{stack.connect_url}/connectors/compose-{run}", timeout=30)
        db.drop()  # and its slot
        with psycopg.connect(db.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                sql.Identifier(owner)))  # fmt: skip
