"""`outbox router run --workers N`: N router processes on one machine sharing
one port (SO_REUSEPORT), so the router uses every core.

Each worker is a whole replica: its own Kafka consumer in the same group (the
partitions are split between the workers), its own Redis subscription and its
own sockets; the kernel spreads new connections over the workers. The
guarantees are those of replicas: dedupe and order in Redis and per partition,
no gap through the fan-out. This parent only starts the workers, forwards
SIGTERM/SIGINT, restarts a worker that dies (with backoff) and stops them all
by pid when it stops.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    restarts: int = field(default=0)


def worker_env(base: dict[str, str], index: int, admin_port: int | None) -> dict[str, str]:
    """The environment of worker ``index`` (pure)."""
    env = {**base, "OUTBOX_WORKERS": "1", "OUTBOX_REUSE_PORT": "true",
           "OUTBOX_WORKER_INDEX": str(index)}  # fmt: skip
    if admin_port:  # one admin port each: admin_port, admin_port + 1, ...
        env["OUTBOX_ADMIN_PORT"] = str(admin_port + index)
    return env


def run_workers(n: int, argv: Sequence[str], *, admin_port: int | None,
                restart_backoff_s: float = 1.0) -> int:  # fmt: skip
    """Start ``n`` workers running ``argv`` and supervise them until a signal;
    the exit code is the highest a worker stopped with (0 on a clean stop)."""
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signum)

    def start(i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, *argv],
                                env=worker_env(dict(os.environ), i, admin_port))  # fmt: skip

    workers = [Worker(i, start(i), time.monotonic()) for i in range(n)]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("started %d router workers: pids %s", n, [w.proc.pid for w in workers])
    code = 0
    try:
        while True:
            alive = 0
            for w in workers:
                rc = w.proc.poll()
                if rc is None:
                    alive += 1
                    continue
                if stopping:
                    code = max(code, rc if rc > 0 else 0)
                    continue
                if rc == 3 and time.monotonic() - w.started < 60:
                    # A dependency never answered at start: say so, do not spin.
                    log.error("worker %d could not start (exit 3); stopping", w.index)
                    on_signal(signal.SIGTERM, None)
                    code = 3
                    continue
                w.restarts += 1
                delay = min(restart_backoff_s * 2 ** min(w.restarts - 1, 5), 30.0)
                log.warning("worker %d (pid %d) exited %s; restarting in %.0f s", w.index,
                            w.proc.pid, rc, delay)  # fmt: skip
                time.sleep(delay)
                w.proc, w.started = start(w.index), time.monotonic()
                alive += 1
            if alive == 0:
                return code
            time.sleep(0.2)
    finally:
        for w in workers:  # ours, by pid
            if w.proc.poll() is None:
                w.proc.terminate()
                try:
                    w.proc.wait(30)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait(10)
