"""librdkafka's and httpx's own lines go through Python logging: no raw
"%3|...|FAIL|" lines, JSON when asked for (real processes, nothing to reach)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from stack.procs import free_port, stop_pid


def _env(**kw: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    closed = str(free_port())
    e.update({"OUTBOX_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed}",
              "OUTBOX_CONNECT_URL": f"http://127.0.0.1:{closed}"}, **kw)  # fmt: skip
    return e


def test_doctor_with_nothing_reachable_prints_only_its_checks() -> None:
    out = subprocess.run([sys.executable, "-m", "outbox.cli", "doctor"], env=_env(),
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 1
    assert "%3|" not in text and "rdkafka" not in text
    assert len(text.splitlines()) <= 8, text
    # A refused broker port is said at once, not after the Kafka client's timeout.
    assert "broker unreachable" in text and "refused" in text.lower(), text


def test_router_json_logs_stay_json_with_kafka_and_redis_down() -> None:
    """Kafka's lines and the final "cannot start" (Redis never answers: exit 3)
    are JSON lines like the rest."""
    port = free_port()
    env = _env(OUTBOX_JWT_SECRET="x" * 32, OUTBOX_ROUTER_PORT=str(port),
               OUTBOX_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", OUTBOX_START_TIMEOUT_S="4")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "outbox.cli", "router", "run", "--log-format",
                             "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            stop_pid(proc.pid, expect="outbox.cli", timeout=30)
            proc.communicate(timeout=30)
    assert proc.returncode == 3
    lines = [ln for ln in out.decode().splitlines() if ln.strip()]
    assert "cannot start: Redis is unreachable" in lines[-1]
    for ln in lines:
        assert json.loads(ln)["level"], ln
