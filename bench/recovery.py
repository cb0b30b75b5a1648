"""Recovery: time from `kill -9` of the Kafka Connect worker (restarted at once)
to the first notification committed after the kill reaching a client, and how
many duplicates the router absorbed.

    python -m bench.recovery [--runs 3] [--rate 500] [--duration 40] [--kill-after 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import bench_stack, python_proc, summary, wait_for_count, write_result
from bench.e2e import SECRET, Pipeline
from stack.manager import StackManager
from stack.settings import StackSettings


def dedup_count(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("outbox_router_deduplicated_total"):
            return float(line.split()[1])
    return 0.0


def one_run(
    p: Pipeline, stack: Any, args: argparse.Namespace, workdir: Path, n: int
) -> dict[str, Any]:
    recv, sent = workdir / f"rrecv{n}.jsonl", workdir / f"rsent{n}.jsonl"
    prefix = f"rec{n}-{p.prefix}"
    clients = python_proc(["-m", "bench.clients", f"ws://127.0.0.1:{p.port}/ws", SECRET, "5", "1", str(recv),
                           "--prefix", prefix], stdout=subprocess.PIPE)  # fmt: skip
    assert clients.stdout is not None and "ready" in clients.stdout.readline()
    dup0 = dedup_count(p.port)
    writer = python_proc(["-m", "bench.load_writer", p.dsn, str(args.rate), str(args.duration), "5", str(sent),
                          "--prefix", prefix], stdout=subprocess.PIPE)  # fmt: skip
    time.sleep(args.kill_after)
    mgr = StackManager(StackSettings(), state_dir=Path(stack.state_dir))
    t_kill = time.time()
    os.kill(stack.component("connect").pid, signal.SIGKILL)
    restart = threading.Thread(target=mgr.restart_connect, args=(stack,))
    restart.start()
    writer.communicate(timeout=args.duration * 4 + 120)
    restart.join(300)
    wait_for_count(clients.stdout, 10**9, idle_s=5, limit_s=60)
    dups = dedup_count(p.port) - dup0
    clients.send_signal(signal.SIGTERM)
    clients.communicate(timeout=120)
    commits = {}
    with open(sent) as f:
        for line in f:
            eid, _, t = json.loads(line)
            commits[eid] = t
    first_after = None
    received = set()
    with open(recv) as f:
        for line in f:
            _, _, eid, t = json.loads(line)
            received.add(eid)
            if (
                eid in commits
                and commits[eid] > t_kill
                and (first_after is None or t < first_after)
            ):
                first_after = t
    lost = len(set(commits) - received)
    return {"recovery_s": (first_after - t_kill) if first_after else None, "duplicates_absorbed": dups,
            "sent": len(commits), "lost": lost}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--duration", type=float, default=40)
    ap.add_argument("--kill-after", type=float, default=10)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="outbox-bench-recovery-"))
    runs = []
    with bench_stack() as stack:
        ns = argparse.Namespace(teachers=5, conns=1, duration=args.duration, warmup=0)
        p = Pipeline(stack, "tuned", {}, ns, workdir)
        p.start()
        try:
            for n in range(args.runs):
                r = one_run(p, stack, args, workdir, n)
                runs.append(r)
                print(f"run {n + 1}: first post-kill notification after {r['recovery_s']:.1f} s, "
                      f"{r['duplicates_absorbed']:.0f} duplicates absorbed, lost {r['lost']}", flush=True)  # fmt: skip
        finally:
            p.stop()
    out = {"settings": vars(args), "runs": runs,
           "recovery_s": summary([r["recovery_s"] for r in runs if r["recovery_s"] is not None]),
           "duplicates_absorbed": summary([r["duplicates_absorbed"] for r in runs])}  # fmt: skip
    print(f"wrote {write_result('recovery', out)}")
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
