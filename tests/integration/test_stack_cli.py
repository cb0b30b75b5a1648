"""`outbox stack up/status/env/logs/down` as a user runs them: a second, separate stack."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stack.procs import alive, port_open, stop_pid


def _processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line holds ``text``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    out.append(int(entry))
    return out


def outbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outbox.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=dict(os.environ))  # fmt: skip


def test_up_status_env_logs_down_leave_nothing_behind() -> None:
    with tempfile.TemporaryDirectory(prefix="outbox-cli-stack-") as tmp:
        Path(tmp).chmod(0o755)
        d = str(Path(tmp) / "state")
        rows: list[dict[str, object]] = []
        up = outbox("stack", "up", "--state-dir", d)
        try:
            assert up.returncode == 0, up.stderr
            for name in ("postgres", "redis", "broker", "connect"):
                assert name in up.stdout
            assert "ready at" in up.stdout  # progress while it waits
            st = outbox("stack", "status", "--state-dir", d, "--json")
            assert st.returncode == 0, st.stderr
            rows = json.loads(st.stdout)
            assert {r["name"] for r in rows} == {"postgres", "redis", "broker", "connect"}
            assert all(r["healthy"] for r in rows)
            env = outbox("stack", "env", "--state-dir", d).stdout
            for var in (
                "OUTBOX_PG_DSN",
                "OUTBOX_REDIS_URL",
                "OUTBOX_KAFKA_BOOTSTRAP",
                "OUTBOX_CONNECT_URL",
            ):
                assert f"export {var}=" in env
            logs = outbox("stack", "logs", "connect", "--state-dir", d, "-n", "5")
            assert logs.returncode == 0 and "== connect" in logs.stdout
            bad = outbox("stack", "logs", "nope", "--state-dir", d)
            assert bad.returncode == 2 and "one of" in bad.stderr
            again = outbox("stack", "up", "--state-dir", d)
            assert again.returncode == 1 and "already running" in again.stderr
        finally:
            down = outbox("stack", "down", "--state-dir", d)
        assert down.returncode == 0 and "stopped:" in down.stdout
        for r in rows:
            assert not alive(int(str(r["pid"]))), r
            assert not port_open(int(str(r["port"]))), r
        assert "logs kept in" in down.stdout
        assert "no stack was running" in outbox("stack", "down", "--state-dir", d).stdout
        missing = outbox("stack", "status", "--state-dir", d)
        assert missing.returncode == 1 and "no stack is running here" in missing.stderr
        # The logs outlive the stack: read them, follow one, then purge them.
        kept = outbox("stack", "logs", "connect", "--state-dir", d, "-n", "2")
        assert kept.returncode == 0 and "== connect" in kept.stdout, kept.stderr
        assert outbox("stack", "logs", "redis", "--state-dir", d, "-n", "0").stdout.strip() == (
            f"== redis ({Path(d).resolve() / 'redis.log'}) ==")  # fmt: skip
        follow = subprocess.Popen([sys.executable, "-m", "outbox.cli", "stack", "logs", "redis",
                                   "--state-dir", d, "-n", "0", "-f"], stdout=subprocess.PIPE,
                                  text=True)  # fmt: skip
        try:
            time.sleep(1.5)
            with (Path(d) / "redis.log").open("a") as f:
                f.write("a line written after the stack stopped\n")
            assert follow.stdout is not None
            assert follow.stdout.readline().strip() == "a line written after the stack stopped"
        finally:
            follow.terminate()
            follow.wait(10)
            if follow.stdout is not None:
                follow.stdout.close()
        purged = outbox("stack", "down", "--state-dir", d, "--purge")
        assert purged.returncode == 0 and not list(Path(d).glob("*.log"))
        assert outbox("stack", "logs", "--state-dir", d).returncode == 1


def test_up_stopped_half_way_by_sigterm_stops_what_it_started() -> None:
    """No state file exists until `up` ends, so a SIGTERM half way (a closed
    terminal, a CI timeout) must not leave the broker or Connect running."""
    with tempfile.TemporaryDirectory(prefix="outbox-cli-stack-") as tmp:
        Path(tmp).chmod(0o755)
        d = str(Path(tmp) / "state")
        # The JVM options are a setting, split like a shell line.
        jvm = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Doutbox.stack.test='a b'"
        up = subprocess.Popen([sys.executable, "-m", "outbox.cli", "stack", "up", "--state-dir", d],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OUTBOX_STACK_CONNECT_JVM_OPTIONS": jvm})  # fmt: skip
        assert up.stdout is not None
        broker_port = 0
        try:
            for line in up.stdout:
                if line.strip().startswith("broker") and "ready at" in line:
                    broker_port = int(line.rsplit(":", 1)[1])
                if line.strip().startswith("connect"):  # broker and Connect are running
                    break
            assert broker_port and port_open(broker_port)
            # Connect, by its worker file (a moment after the line on a loaded machine)
            worker_file = f"{Path(d).resolve()}/connect-worker.properties"
            deadline = time.monotonic() + 10
            while not (connect := _processes_naming(worker_file)) and time.monotonic() < deadline:
                time.sleep(0.1)
            log = Path(d) / "connect.log"
            assert len(connect) == 1, log.read_text()[-2000:] if log.exists() else "no connect.log"
            with open(f"/proc/{connect[0]}/cmdline", "rb") as f:
                argv = f.read()
            assert b"ConnectDistributed" in argv and b"\0-Doutbox.stack.test=a b\0" in argv
            up.send_signal(signal.SIGTERM)
            _, err = up.communicate(timeout=60)
            assert up.returncode == 128 + signal.SIGTERM, err
            assert "interrupted: stopped what had started" in err
            left = _processes_naming(str(Path(d).resolve()))
            assert left == [], f"still running after `up` was stopped: {left}"
            assert _processes_naming(f"tcp://127.0.0.1:{broker_port}") == []
            assert not port_open(broker_port)
        finally:
            if up.poll() is None:
                up.kill()
                up.communicate()
            for text in (str(Path(d).resolve()), f"tcp://127.0.0.1:{broker_port}"):
                for pid in _processes_naming(text) if broker_port else []:
                    stop_pid(pid, expect=text, timeout=10)
