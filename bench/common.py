"""Shared helpers of the benchmarks: machine info, statistics, result files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from stack.manager import StackManager
from stack.settings import StackSettings
from stack.state import StackState, load

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    def ver(pkg: str) -> str:
        try:
            from importlib.metadata import version

            return version(pkg)
        except Exception:
            return "?"

    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "mem_mib": mem, "python": sys.version.split()[0],
        "platform": platform.platform(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {p: ver(p) for p in ("websockets", "confluent-kafka", "redis", "psycopg", "pydantic")},
        "stack": {"postgres": "15", "kafka_connect": "3.9.0", "debezium": "3.0.7.Final", "broker": "tansu 0.6.0"},
    }  # fmt: skip


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return path


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def cleanup_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, ``kill``) raise SystemExit in this process, so the
    ``finally`` blocks that stop what a benchmark started (its stack, its router,
    its clients process) run; by default the signal ends the process without them
    and leaves those behind. Idempotent; a no-op outside the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


@contextmanager
def bench_stack() -> Iterator[StackState]:
    """A running stack: the one in $OUTBOX_BENCH_STACK_DIR, or a fresh one stopped at the end."""
    cleanup_on_sigterm()
    reuse = os.environ.get("OUTBOX_BENCH_STACK_DIR")
    if reuse:
        yield load(Path(reuse))
        return
    tmp = Path(tempfile.mkdtemp(prefix="outbox-bench-"))
    tmp.chmod(0o755)
    mgr = StackManager(StackSettings(), state_dir=tmp / "stack")
    try:
        yield mgr.up()
    finally:
        mgr.down()
        shutil.rmtree(tmp, ignore_errors=True)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (a router with workers)."""
    total = 0.0
    for p in descendants(pid):
        with contextlib.suppress(OSError):  # exited meanwhile
            total += cpu_seconds(p)
    return total


def redis_cpu_seconds(url: str) -> float:
    """User + system CPU time the Redis at ``url`` has used so far."""
    r = redis.Redis.from_url(url)
    try:
        info: dict[str, Any] = r.info("cpu")  # type: ignore[assignment]
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    finally:
        r.close()


def _stat_ticks(pid: int) -> list[int]:
    """utime, stime, cutime, cstime of ``pid`` in clock ticks (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return [int(x) for x in fields[11:15]]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    utime, stime, _, _ = _stat_ticks(pid)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid: int) -> float:
    """CPU seconds of a server that forks a process per connection (Postgres):
    the parent, its live descendants, and the children it has already reaped, so
    a backend that exits between two readings still counts."""
    _, _, cutime, cstime = _stat_ticks(pid)
    return tree_cpu_seconds(pid) + (cutime + cstime) / os.sysconf("SC_CLK_TCK")


def python_proc(
    args: list[str], env: dict[str, str] | None = None, **kw: Any
) -> subprocess.Popen[str]:
    """A Python child process of this benchmark (stopped by its ``finally``, even on SIGTERM)."""
    cleanup_on_sigterm()
    return subprocess.Popen([sys.executable, *args], env=env, text=True, **kw)


def wait_for_count(
    stdout: Any, expected: int, *, idle_s: float = 5.0, limit_s: float = 300.0
) -> int:
    """Read a clients process' "count N" lines until N reaches ``expected`` or
    stops growing for ``idle_s``."""
    last, last_change = -1, time.monotonic()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        line = stdout.readline()
        if not line:
            break
        if not line.startswith("count "):
            continue
        n = int(line.split()[1])
        if n >= expected:
            return n
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > idle_s:
            break
    return last
