"""Router alone: topic to frames, against a bare `websockets` broadcast loop fed
the same messages in the same run; latency from Kafka receipt to frame written at
a steady rate; RSS per idle connection at 10,000 connections.

    python -m bench.router [--messages 100000] [--teachers 1000] [--runs 3]
                           [--latency-rate 2000] [--latency-seconds 20] [--idle 10000]
                           [--workers N]   # also `router run --workers N`, side by side
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from confluent_kafka import Producer

from bench.common import (
    bench_stack,
    descendants,
    pct,
    python_proc,
    redis_cpu_seconds,
    rss_kib,
    summary,
    tree_cpu_seconds,
    wait_for_count,
    write_result,
)
from contracts import build_notification
from outbox import stages
from relay.topics import ensure_topic
from stack.procs import free_port, stop_pid
from stack.state import StackState

SECRET = "bench-secret-0123456789abcdef0123456789"


@functools.cache
def body(teacher: str) -> bytes:
    """The notification a bench teacher gets (the same each time; ids differ)."""
    n = build_notification(
        "batch_processing_started", teacher, {"essays": 30}, "bench", batch_id="b-1"
    )
    return n.to_json().encode()


def record(prefix: str, i: int, teachers: int) -> tuple[bytes, bytes, list[tuple[str, bytes]], str]:
    """Key, value, headers and event id of the ``i``-th bench record."""
    return record_for(f"{prefix}-{i % teachers}")


def record_for(teacher: str) -> tuple[bytes, bytes, list[tuple[str, bytes]], str]:
    """Key, value, headers and event id of a new bench record for ``teacher``."""
    eid = uuid.uuid4().hex
    hdrs = [("id", eid.encode()), ("created_at", datetime.now(UTC).isoformat().encode())]
    return teacher.encode(), body(teacher), hdrs, eid


def produce_all(bootstrap: str, topic: str,
                records: Iterable[tuple[bytes, bytes, list[tuple[str, bytes]], str]],
                flush_s: float = 60) -> None:  # fmt: skip
    """Produce ``records`` as fast as the broker takes them."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 2_000_000})  # fmt: skip
    for i, (key, value, hdrs, _) in enumerate(records):
        while True:
            try:
                p.produce(topic, key=key, value=value, headers=hdrs)  # type: ignore[arg-type]
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(flush_s)


def produce(bootstrap: str, topic: str, n: int, teachers: int, prefix: str) -> float:
    """Produce ``n`` notifications as fast as the broker takes them; returns seconds."""
    t0 = time.monotonic()
    produce_all(bootstrap, topic, (record(prefix, i, teachers) for i in range(n)))
    return time.monotonic() - t0


def start_server(kind: str, stack: StackState, topic: str, port: int, workdir: Path, group: str,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:  # fmt: skip
    log = open(workdir / f"{kind}-{port}.log".replace(" ", ""), "w")  # noqa: SIM115 - closed with the process
    if kind.startswith("router"):
        # "router" is one process; "router xN" runs N workers on the port.
        workers = kind.split("x", 1)[1] if " x" in kind else "1"
        env = {**os.environ, **stack.env(), "OUTBOX_TOPIC": topic, "OUTBOX_JWT_SECRET": SECRET,
               "OUTBOX_MAX_UNAUTHENTICATED_PER_IP": "100000",  # every load client is on 127.0.0.1
               "OUTBOX_ROUTER_PORT": str(port), "OUTBOX_GROUP_ID": group, "OUTBOX_REDIS_PREFIX": f"b{group}",
               "OUTBOX_KAFKA_MAX_POLL_INTERVAL_MS": "10000",
               "OUTBOX_SEND_QUEUE_MAX": "1000000", "OUTBOX_MAX_CONNECTIONS_PER_TEACHER": "1000",
               "OUTBOX_PING_INTERVAL_S": "600", "OUTBOX_WORKERS": workers, **(extra_env or {})}  # fmt: skip
        proc = python_proc(["-m", "outbox.cli", "router", "run", "--log-level", "WARNING"], env=env, stdout=log,
                           stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if r.status_code == 200 and (
                    "kafka_assigned ok" in r.text or (extra_env or {}).get("BENCH_ANY_ASSIGNMENT")
                ):
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("router not ready")
    proc = python_proc(["-m", "bench.bare_broadcast", stack.kafka_bootstrap, topic, group, str(port)],
                       stdout=subprocess.PIPE, stderr=log)  # fmt: skip
    assert proc.stdout is not None
    assert "ready" in proc.stdout.readline()
    time.sleep(6)  # its consumer joins the group
    return proc


def stop_server(proc: subprocess.Popen[str], kind: str) -> None:
    if proc.poll() is None:
        stop_pid(proc.pid, expect="router" if kind.startswith("router") else "bare_broadcast",
                 timeout=20)  # fmt: skip


@dataclass
class Rig:
    """One measured setup: a fresh topic, a server on it, a clients process."""

    topic: str
    port: int
    prefix: str  # teacher ids are "<prefix>-<n>"
    recv: Path  # what the clients write when they stop
    server: subprocess.Popen[str]
    clients: subprocess.Popen[str]

    def stop_clients(self) -> None:
        self.clients.send_signal(signal.SIGTERM)
        self.clients.communicate(timeout=300)


@contextmanager
def rig(stack: StackState, kind: str, teachers: int, workdir: Path, name: str) -> Iterator[Rig]:
    """Start a server of ``kind`` on a new topic and ``teachers`` connected clients;
    stop both and drop the run's Redis keys afterwards."""
    u = uuid.uuid4().hex[:8]
    topic = f"bench.{name}.{u}"
    group = f"{name[0]}{u}"
    ensure_topic(stack.kafka_bootstrap, topic, 6)
    port = free_port()
    server = start_server(kind, stack, topic, port, workdir, group)
    recv = workdir / f"recv-{kind}-{u}.jsonl"
    prefix = f"{name[0]}t{u}"
    clients = python_proc(["-m", "bench.clients", f"ws://127.0.0.1:{port}/ws", SECRET, str(teachers), "1",
                           str(recv), "--prefix", prefix], stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert clients.stdout is not None
        assert "ready" in clients.stdout.readline()
        yield Rig(topic, port, prefix, recv, server, clients)
    finally:
        if clients.poll() is None:
            clients.kill()
        stop_server(server, kind)
        drop_keys(stack, f"b{group}")  # the router's OUTBOX_REDIS_PREFIX


def throughput_run(
    stack: StackState, kind: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    with rig(stack, kind, args.teachers, workdir, "router") as r:
        assert r.clients.stdout is not None
        cpu0, redis0 = tree_cpu_seconds(r.server.pid), redis_cpu(stack)
        produce_s = produce(stack.kafka_bootstrap, r.topic, args.messages, args.teachers, r.prefix)
        wait_for_count(r.clients.stdout, args.messages)
        cpu1, redis1 = tree_cpu_seconds(r.server.pid), redis_cpu(stack)
        peak_rss = sum(rss_kib(p) for p in descendants(r.server.pid))
        r.stop_clients()
    recv = r.recv
    times = []
    with open(recv) as f:
        for line in f:
            times.append(json.loads(line)[3])
    n = len(times)
    dur = (max(times) - min(times)) if n > 1 else float("nan")
    return {"kind": kind, "frames": n, "expected": args.messages, "seconds": dur, "frames_per_s": n / dur if dur else 0,
            "produce_s": produce_s, "server_rss_mib": peak_rss / 1024,
            "server_cpu_us_per_frame": 1e6 * (cpu1 - cpu0) / max(n, 1),
            "redis_cpu_us_per_frame": 1e6 * (redis1 - redis0) / max(n, 1)}  # fmt: skip


def drop_keys(stack: StackState, prefix: str) -> None:
    """Remove a run's Redis keys, so every run starts from the same Redis."""
    r = redis.Redis.from_url(stack.redis_url)
    try:
        batch = []
        for key in r.scan_iter(match=f"{prefix}:*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                r.unlink(*batch)
                batch = []
        if batch:
            r.unlink(*batch)
    finally:
        r.close()


def redis_cpu(stack: StackState) -> float:
    """CPU seconds the stack's Redis has used (the bare loop uses none of it)."""
    return redis_cpu_seconds(stack.redis_url)


def produce_paced(bootstrap: str, topic: str, rate: int, seconds: float, teachers: int,
                  prefix: str) -> dict[str, float]:  # fmt: skip
    """Produce ``rate`` notifications a second, in 5 ms ticks; event id -> send time."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    sent: dict[str, float] = {}
    tick = 0.005
    t0 = time.monotonic()
    i = 0
    while (now := time.monotonic()) - t0 < seconds:
        due = int(rate * (now - t0))
        while i < due:
            key, value, hdrs, eid = record(prefix, i, teachers)
            sent[eid] = time.time()
            p.produce(topic, key=key, value=value, headers=hdrs)  # type: ignore[arg-type]
            i += 1
        p.poll(0)
        time.sleep(max(0.0, now + tick - time.monotonic()))
    p.flush(30)
    return sent


def client_latencies_ms(recv: Path, sent: dict[str, float]) -> list[float]:
    """Send -> receive in ms of every frame a clients process recorded (``recv``)
    whose event id is in ``sent`` (event id -> send time)."""
    out = []
    with open(recv) as f:
        for line in f:
            _teacher, _cid, eid, t = json.loads(line)
            if eid in sent:
                out.append(1000 * (t - sent[eid]))
    return out


def latency_run(stack: StackState, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """A steady ``--latency-rate`` for ``--latency-seconds`` to ``--teachers`` connections;
    the router's own histogram of Kafka receipt -> frame written, and the clients'
    view (producer send -> frame received) beside it."""
    metric = "outbox_router_kafka_to_frame_seconds"
    with rig(stack, "router", args.teachers, workdir, "latency") as r:
        assert r.clients.stdout is not None
        url = f"http://127.0.0.1:{r.port}/metrics"
        # Warm-up second, not counted: the first fetches and script loads.
        produce_paced(
            stack.kafka_bootstrap, r.topic, args.latency_rate, 1.0, args.teachers, r.prefix
        )
        time.sleep(1)
        before = stages.histogram(httpx.get(url).text, metric)
        sent = produce_paced(stack.kafka_bootstrap, r.topic, args.latency_rate, args.latency_seconds,
                             args.teachers, r.prefix)  # fmt: skip
        wait_for_count(r.clients.stdout, len(sent), idle_s=3)
        time.sleep(0.5)
        after = stages.histogram(httpx.get(url).text, metric)
        r.stop_clients()
    recv = r.recv
    window = stages.diff(after, before)
    n = window[-1][1] if window else 0.0
    client_ms = client_latencies_ms(recv, sent)
    within_20 = next((c for le, c in window if le == 0.02), float("nan"))
    return {
        "rate_per_s": args.latency_rate, "seconds": args.latency_seconds, "produced": len(sent),
        "frames_in_histogram": n, "frames_at_clients": len(client_ms),
        "router_p50_ms": 1000 * stages.quantile(window, 0.50),
        "router_p99_ms": 1000 * stages.quantile(window, 0.99),
        "router_share_within_20ms": within_20 / n if n else float("nan"),
        "client_p50_ms": pct(client_ms, 50), "client_p99_ms": pct(client_ms, 99),
    }  # fmt: skip


def idle_rss(stack: StackState, kind: str, conns: int, workdir: Path) -> dict[str, Any]:
    u = uuid.uuid4().hex[:8]
    topic = f"bench.idle.{u}"
    ensure_topic(stack.kafka_bootstrap, topic, 6)
    port = free_port()
    server = start_server(kind, stack, topic, port, workdir, f"i{u}")
    try:
        time.sleep(2)
        before = rss_kib(server.pid)
        clients = python_proc(["-m", "bench.clients", f"ws://127.0.0.1:{port}/ws", SECRET, str(conns), "1",
                               str(workdir / "idle.jsonl"), "--prefix", f"idle{u}"], stdout=subprocess.PIPE)  # fmt: skip
        assert clients.stdout is not None
        ok = "ready" in clients.stdout.readline()
        time.sleep(3)
        after = rss_kib(server.pid)
        clients.send_signal(signal.SIGTERM)
        clients.communicate(timeout=300)
    finally:
        stop_server(server, kind)
    return {"kind": kind, "connections": conns, "all_connected": ok, "rss_before_mib": before / 1024,
            "rss_after_mib": after / 1024, "kib_per_connection": (after - before) / conns}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--teachers", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-rate", type=int, default=2000, help="0 skips the latency run")
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also measure `router run --workers N` side by side (N > 1)",
    )
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="outbox-bench-router-"))
    multi = f"router x{args.workers}" if args.workers > 1 else None
    kinds = ["router", "bare", *([multi] if multi else [])]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    idle: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    with bench_stack() as stack:
        for r in range(args.runs):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                res = throughput_run(stack, kind, args, workdir)
                runs[kind].append(res)
                print(f"run {r + 1} {kind:<7} {res['frames']}/{res['expected']} frames in {res['seconds']:.2f} s = "
                      f"{res['frames_per_s']:,.0f}/s  (rss {res['server_rss_mib']:.0f} MiB, cpu "
                      f"{res['server_cpu_us_per_frame']:.1f} us/frame, redis {res['redis_cpu_us_per_frame']:.1f})", flush=True)  # fmt: skip
        for r in range(args.runs if args.latency_rate else 0):
            res = latency_run(stack, args, workdir)
            latency.append(res)
            print(f"latency run {r + 1} at {res['rate_per_s']}/s: Kafka receipt -> frame p50 "
                  f"{res['router_p50_ms']:.1f} ms, p99 {res['router_p99_ms']:.1f} ms, "
                  f"{100 * res['router_share_within_20ms']:.2f}% within 20 ms; producer -> client p50 "
                  f"{res['client_p50_ms']:.1f} ms, p99 {res['client_p99_ms']:.1f} ms "
                  f"({res['frames_at_clients']}/{res['produced']} frames)", flush=True)  # fmt: skip
        if args.idle:
            for kind in ("router", "bare"):
                res = idle_rss(stack, kind, args.idle, workdir)
                idle.append(res)
                print(f"idle {kind:<7} {res['connections']} connections: {res['rss_before_mib']:.0f} -> "
                      f"{res['rss_after_mib']:.0f} MiB ({res['kib_per_connection']:.1f} KiB/conn)", flush=True)  # fmt: skip
    ratio = [
        a["frames_per_s"] / b["frames_per_s"]
        for a, b in zip(runs["router"], runs["bare"], strict=True)
    ]
    lat = {k: summary([x[k] for x in latency]) for k in ("router_p50_ms", "router_p99_ms",
           "router_share_within_20ms", "client_p50_ms", "client_p99_ms")} if latency else {}  # fmt: skip
    out = {"settings": vars(args), "runs": runs, "idle": idle, "latency_runs": latency,
           "latency": lat,
           "router_frames_per_s": summary([x["frames_per_s"] for x in runs["router"]]),
           "bare_frames_per_s": summary([x["frames_per_s"] for x in runs["bare"]]),
           "throughput_ratio_router_over_bare": summary(ratio)}  # fmt: skip
    if multi:
        out[f"{multi}_frames_per_s"] = summary([x["frames_per_s"] for x in runs[multi]])
        out[f"{multi}_over_router"] = summary([a["frames_per_s"] / b["frames_per_s"] for a, b in
                                               zip(runs[multi], runs["router"], strict=True)])  # fmt: skip
        out[f"{multi}_cpu_us_per_frame"] = summary(
            [x["server_cpu_us_per_frame"] for x in runs[multi]]
        )
    path = write_result("router", out)
    print(
        f"router/bare throughput ratio: median {out['throughput_ratio_router_over_bare']['median']:.2f}"
    )
    if multi:
        print(
            f"{multi}/router throughput ratio: median {out[f'{multi}_over_router']['median']:.2f}"
        )
    print(f"wrote {path}")
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
