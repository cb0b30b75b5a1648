"""Fan-out by broadcast vs by interest vs sharded: router replicas that each hold
a share of the teachers, the same notifications through each mode, side by side.

    python -m bench.fanout [--messages 100000] [--teachers 1000] [--replicas 3] [--runs 2]
                           [--modes broadcast,interest,sharded] [--redis single|cluster]

Each run starts ``--replicas`` routers in one consumer group on a fresh topic
(6 partitions), connects teacher ``k`` to replica ``k mod replicas`` (one
connection each), produces ``--messages`` notifications spread over all
teachers and waits until every client has its share. Reported per replica: CPU
seconds for the run and frames written. Then the same with one replica holding
every teacher, for the single-replica case. Modes alternate run by run.
``even_split_over_broadcast``, from the same runs: one replica's CPU for
everything divided by ``--replicas`` (a share of ingest and of deliveries,
nothing foreign), over broadcast's CPU per replica; a fan-out that only drops
foreign traffic lands about there.
``unit_costs_us``, per mode and run: what a replica spends on each notification
of its own (its ingest share and its deliveries: the mode's CPU per replica over
N/R) and what broadcast spends beyond that on each foreign one (the difference
over N(R-1)/R). The ratio to broadcast is own / (own + (R-1) x foreign), so it
is at most 0.5 exactly when own <= (R-1) x foreign (``own_needed_for_half``).
``--redis cluster`` runs it against a Redis Cluster of its own (3 primaries, 3
replicas on loopback); Redis figures are then the sum over all six nodes, and
``redis_primary_cpu_s`` the primaries' share (what sizes a cluster: a replica
only applies its primary's stream).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.common import (
    bench_stack,
    python_proc,
    redis_cpu_seconds,
    summary,
    tree_cpu_seconds,
    wait_for_count,
    write_result,
)
from bench.router import SECRET, produce_all, record_for, start_server, stop_server
from relay.topics import ensure_topic
from stack.manager import StackManager
from stack.procs import free_port
from stack.settings import StackSettings
from stack.state import StackState

MODES = ("broadcast", "interest", "sharded")


def teacher_name(prefix: str, replica: int, n: int) -> str:
    return f"{prefix}{replica}-{n}"


def produce(bootstrap: str, topic: str, messages: int, per_replica: list[int], prefix: str) -> None:
    """``messages`` notifications round-robin over the replicas' teachers."""
    replicas = len(per_replica)
    produce_all(bootstrap, topic, (record_for(teacher_name(prefix, i % replicas,
                                                          (i // replicas) % per_replica[i % replicas]))
                                   for i in range(messages)), flush_s=120)  # fmt: skip


@dataclass
class RedisTarget:
    """The Redis the routers use: the stack's, or a cluster (every node's URL)."""

    urls: list[str]
    cluster: bool = False

    def router_env(self) -> dict[str, str]:
        return {"OUTBOX_REDIS_URL": self.urls[0], "OUTBOX_REDIS_CLUSTER": str(self.cluster).lower()}

    def cpu(self) -> float:
        """CPU seconds used by every node so far."""
        return sum(redis_cpu_seconds(url) for url in self.urls)

    def primaries(self) -> list[str]:
        """The URLs of the nodes that are primaries now (the one Redis, if single)."""
        out = []
        for url in self.urls:
            r = redis.Redis.from_url(url)
            try:
                role: dict[str, Any] = r.info("replication")  # type: ignore[assignment]
            finally:
                r.close()
            if role.get("role") == "master":
                out.append(url)
        return out

    def stats(self) -> dict[str, float]:
        """Commands processed, bytes sent to clients (pub/sub included, the
        cluster bus not), memory used and, on a cluster, the publish messages
        the nodes sent each other over the bus; summed over the nodes."""
        out = {"commands": 0.0, "bytes_out": 0.0, "memory": 0.0, "bus_publishes": 0.0}
        for url in self.urls:
            r = redis.Redis.from_url(url)
            try:
                stats: dict[str, Any] = r.info("stats")  # type: ignore[assignment]
                memory: dict[str, Any] = r.info("memory")  # type: ignore[assignment]
                out["commands"] += float(stats["total_commands_processed"])
                out["bytes_out"] += float(stats.get("total_net_output_bytes", 0))
                out["memory"] += float(memory["used_memory"])
                if self.cluster:
                    info: Any = r.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
                    if isinstance(info, bytes | str):  # unparsed: "name:value" lines
                        text = info.decode() if isinstance(info, bytes) else info
                        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                    for name in ("cluster_stats_messages_publish_sent",
                                 "cluster_stats_messages_publishshard_sent"):  # fmt: skip
                        out["bus_publishes"] += float(info.get(name, 0))
            finally:
                r.close()
        return out

    def drop(self, prefix: str) -> None:
        """Remove a run's keys from every primary (one key per command: a
        cluster refuses keys of several slots in one)."""
        for url in self.primaries():
            r = redis.Redis.from_url(url)
            try:
                pipe = r.pipeline(transaction=False)
                for key in r.scan_iter(match=f"{prefix}:*", count=5000):
                    pipe.unlink(key)
                pipe.execute()
            finally:
                r.close()


@contextmanager
def redis_target(stack: StackState, kind: str) -> Iterator[RedisTarget]:
    if kind == "single":
        yield RedisTarget([stack.redis_url])
        return
    tmp = Path(tempfile.mkdtemp(prefix="outbox-bench-cluster-"))
    manager = StackManager(StackSettings(), state_dir=tmp / "state")
    try:
        nodes = manager.start_redis_cluster()
        yield RedisTarget([n.url for n in nodes], cluster=True)
    finally:
        manager.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)


def run(stack: StackState, target: RedisTarget, mode: str, replicas: int, args: argparse.Namespace,
        workdir: Path) -> dict[str, Any]:  # fmt: skip
    u = uuid.uuid4().hex[:8]
    topic, group, prefix = f"bench.fanout.{u}", f"f{u}", f"ft{u}r"
    ensure_topic(stack.kafka_bootstrap, topic, 6)
    per = [len(range(k, args.teachers, replicas)) for k in range(replicas)]
    env = {"OUTBOX_FANOUT": mode, "BENCH_ANY_ASSIGNMENT": "1", **target.router_env()}
    servers, clients = [], []
    try:
        for _ in range(replicas):
            port = free_port()
            servers.append((port, start_server("router", stack, topic, port, workdir, group, env)))
        time.sleep(8)  # the group settles: every replica owns its share of the partitions
        for k, (port, _) in enumerate(servers):
            c = python_proc(["-m", "bench.clients", f"ws://127.0.0.1:{port}/ws", SECRET, str(per[k]), "1",
                             str(workdir / f"recv-{u}-{k}.jsonl"), "--prefix", f"{prefix}{k}"],
                            stdout=subprocess.PIPE)  # fmt: skip
            assert c.stdout is not None and "ready" in c.stdout.readline()
            clients.append(c)
        cpu0 = [tree_cpu_seconds(p.pid) for _, p in servers]
        primaries = target.primaries()
        redis0, stats0 = target.cpu(), target.stats()
        primary0 = sum(redis_cpu_seconds(url) for url in primaries)
        t0 = time.monotonic()
        produce(stack.kafka_bootstrap, topic, args.messages, per, prefix)
        frames = []
        for k, c in enumerate(clients):
            want = len(range(k, args.messages, replicas))
            frames.append(wait_for_count(c.stdout, want, idle_s=5, limit_s=600))
        seconds = time.monotonic() - t0
        cpu = [tree_cpu_seconds(p.pid) - c0 for (_, p), c0 in zip(servers, cpu0, strict=True)]
        redis_s = target.cpu() - redis0
        primary_s = sum(redis_cpu_seconds(url) for url in primaries) - primary0
        stats = {k: v - stats0[k] for k, v in target.stats().items()}
    finally:
        for c in clients:
            c.kill()
            c.communicate(timeout=60)
        for _, p in servers:
            stop_server(p, "router")
        target.drop(f"b{group}")
    return {"mode": mode, "replicas": replicas, "teachers": per, "frames": frames, "seconds": seconds,
            "cpu_s": cpu, "redis_cpu_s": redis_s, "redis_primary_cpu_s": primary_s,
            "redis_primaries": len(primaries), "expected": args.messages,
            "redis_commands_per_notification": stats["commands"] / args.messages,
            "redis_bytes_out_per_notification": stats["bytes_out"] / args.messages,
            "redis_memory_bytes_per_notification": stats["memory"] / args.messages,
            "cluster_bus_publishes_per_notification": stats["bus_publishes"] / args.messages}  # fmt: skip


def unit_costs_us(broadcast_cpu_s: list[float], mode_cpu_s: list[float], messages: int
                  ) -> dict[str, float]:  # fmt: skip
    """One run's per-notification costs, in us (pure): ``own``, a replica's CPU
    per notification of its own share under the mode; ``foreign``, what a
    broadcast replica spends beyond that per notification of the others'; and
    ``own_needed_for_half``, the ``own`` at which the mode would cost half of
    broadcast per replica with this ``foreign``."""
    r = len(mode_cpu_s)
    if r < 2 or len(broadcast_cpu_s) != r:
        raise ValueError("needs two or more replicas, as many in both modes")
    mode, broadcast = sum(mode_cpu_s) / r, sum(broadcast_cpu_s) / r
    own = 1e6 * mode / (messages / r)
    foreign = 1e6 * (broadcast - mode) / (messages * (r - 1) / r)
    return {"own": own, "foreign": foreign, "own_needed_for_half": (r - 1) * foreign}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--teachers", type=int, default=1000)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--single", action=argparse.BooleanOptionalAction, default=True,
                    help="also one replica with every teacher")  # fmt: skip
    ap.add_argument("--redis", choices=("single", "cluster"), default="single",
                    help="the stack's Redis, or a Redis Cluster started for the run")  # fmt: skip
    ap.add_argument("--modes", default=",".join(MODES),
                    help="fan-out modes to compare, broadcast first (default: all)")  # fmt: skip
    args = ap.parse_args()
    modes = tuple(m for m in args.modes.split(",") if m)
    if not modes or modes[0] != "broadcast" or not set(modes) <= set(MODES):
        raise SystemExit(f"--modes: a comma-separated list of {', '.join(MODES)}, broadcast first")
    workdir = Path(tempfile.mkdtemp(prefix="outbox-bench-fanout-"))
    results: dict[str, list[dict[str, Any]]] = {}
    shapes = [args.replicas, *([1] if args.single else [])]
    with bench_stack() as stack, redis_target(stack, args.redis) as target:
        for r in range(args.runs):
            for replicas in shapes:
                for mode in modes if r % 2 == 0 else modes[::-1]:
                    res = run(stack, target, mode, replicas, args, workdir)
                    results.setdefault(f"{mode} x{replicas}", []).append(res)
                    print(f"run {r + 1} {mode:<9} x{replicas}: frames {sum(res['frames'])}/{args.messages} in "
                          f"{res['seconds']:.1f} s; CPU s per replica "
                          f"{' '.join(f'{c:.1f}' for c in res['cpu_s'])}; Redis {res['redis_cpu_s']:.1f} s"
                          + (f", {res['cluster_bus_publishes_per_notification']:.2f} bus publishes per "
                             "notification" if args.redis == "cluster" else ""),
                          flush=True)  # fmt: skip
    agg: dict[str, Any] = {}
    for key, runs in results.items():
        agg[key] = {"cpu_s_per_replica": summary([sum(x["cpu_s"]) / len(x["cpu_s"]) for x in runs]),
                    "redis_cpu_s": summary([x["redis_cpu_s"] for x in runs]),
                    "redis_primary_cpu_s": summary([x["redis_primary_cpu_s"] for x in runs]),
                    "seconds": summary([x["seconds"] for x in runs]),
                    "lost": sum(x["expected"] - sum(x["frames"]) for x in runs)}  # fmt: skip
    by_mode: dict[str, dict[str, Any]] = {}
    for mode in modes[1:]:
        for replicas in shapes:
            b, m = results.get(f"broadcast x{replicas}"), results.get(f"{mode} x{replicas}")
            if b and m:  # per replica, within each run
                by_mode.setdefault(mode, {})[f"x{replicas}"] = summary(
                    [sum(y["cpu_s"]) / sum(x["cpu_s"]) for x, y in zip(b, m, strict=True)]
                )
    b1, br = results.get("broadcast x1"), results.get(f"broadcast x{args.replicas}")
    units: dict[str, dict[str, Any]] = {}
    for mode in modes[1:]:
        m = results.get(f"{mode} x{args.replicas}")
        if br and m and args.replicas > 1:
            per_run = [unit_costs_us(x["cpu_s"], y["cpu_s"], args.messages)
                       for x, y in zip(br, m, strict=True)]  # fmt: skip
            units[mode] = {k: summary([u[k] for u in per_run]) for k in per_run[0]}
    # A replica doing a 1/R share of one replica's whole work (its share of
    # ingest, its own deliveries, nothing foreign), over broadcast's cost per
    # replica, within each run.
    even = (summary([x["cpu_s"][0] / args.replicas / (sum(y["cpu_s"]) / len(y["cpu_s"]))
                      for x, y in zip(b1, br, strict=True)])
             if b1 and br and args.replicas > 1 else None)  # fmt: skip
    out = {
        "settings": vars(args),
        "even_split_over_broadcast": even,
        "unit_costs_us": units,
        "results": agg,
        "raw": results,
        "cpu_ratio_over_broadcast": by_mode,
        "cpu_ratio_interest_over_broadcast": by_mode.get("interest", {}),
    }
    path = write_result("fanout" if args.redis == "single" else "fanout-cluster", out)
    print(json.dumps({"cpu_ratio_over_broadcast": {
        mode: {k: v["median"] for k, v in r.items()} for mode, r in by_mode.items()},
        "even_split_over_broadcast": even and even["median"],
        "unit_costs_us": {mode: {k: round(v["median"], 1) for k, v in u.items()}
                          for mode, u in units.items()}}))  # fmt: skip
    print(f"wrote {path}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
