"""A capacity model computed from the latest measured unit costs.

    python -m bench.capacity            # print the table
    python -m bench.capacity --write    # and put it in docs/operations.md

Unit costs, each from a result file of this folder (the date and machine are in
the file) or, for Connect, from the verified stack recipe:

- router CPU per notification it ingests and delivers to one connection
  (``fanout.json``, one replica, broadcast and interest);
- router CPU per notification of a teacher connected to another replica, which
  broadcast fan-out still receives and routes (``fanout.json``: three replicas
  minus a third of one);
- Redis CPU, commands, bytes sent and memory per notification (``fanout.json``);
- on a Redis Cluster (``fanout-cluster.json``, 3 primaries and 3 replicas, if
  present): the router's costs as above with broadcast and sharded fan-out,
  and the primaries' CPU per notification, which sizes a cluster (a replica
  only applies its primary's stream);
- router memory per idle connection (``router.json``, 10,000 connections);
- one Debezium task: 8,800 events/s end to end (20,000 rows in 100-row
  transactions in 2.3 s on a 2-core machine; the stack recipe). One task per
  replication slot is Debezium's limit for Postgres.

Budgets: a router replica or a Redis primary may use 70 % of one core; a
replica holds at most ``OUTBOX_MAX_CONNECTIONS`` (20,000) connections and 4 GiB
of connection memory. One connection per teacher. One Redis while one primary
carries the rate within its budget; past it a cluster, of at least 3 primaries
(a cluster fails over only with a majority of primaries), sized by the
cluster's own cost per notification, and the router's fan-out and replicas are
then sized by the cluster's costs too.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import RESULTS

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
BEGIN, END = "<!-- capacity:begin -->", "<!-- capacity:end -->"
CONNECT_TASK_EVENTS_PER_S = 8800.0
CORE_BUDGET = 0.7
MAX_CONNECTIONS = 20000
CONN_MEMORY_BYTES = 4 * 2**30
MIN_CLUSTER_PRIMARIES = 3
TEACHERS = (10_000, 100_000, 1_000_000)
RATES = (1_000, 10_000, 50_000)


@dataclass(frozen=True)
class ClusterUnits:
    """What a notification costs with a Redis Cluster behind the routers."""

    own_s: float  # router CPU per notification ingested and delivered, broadcast
    foreign_s: float  # router CPU per notification of another replica's teacher, broadcast
    sharded_own_s: float  # router CPU per notification, sharded fan-out
    primary_s: float  # the primaries' CPU per notification, all of them together
    source: str


@dataclass(frozen=True)
class Units:
    own_s: float  # router CPU per notification ingested and delivered, broadcast
    foreign_s: float  # router CPU per notification of another replica's teacher, broadcast
    interest_own_s: float  # router CPU per notification, interest fan-out
    redis_s: float  # Redis CPU per notification
    redis_commands: float
    redis_bytes_out: float
    redis_memory: float
    conn_bytes: float  # router memory per idle connection
    source: str
    cluster: ClusterUnits | None = None  # None: no cluster measurement to size one by


def _median(runs: list[dict[str, Any]], f: Any) -> float:
    xs = sorted(f(r) for r in runs)
    mid = len(xs) // 2
    return float(xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2)


def _own_and_foreign(fan: dict[str, Any]) -> tuple[float, float]:
    """Broadcast's router CPU per notification of its own (one replica doing
    everything) and per notification of another replica's teacher (what
    ``--replicas`` replicas spend beyond their share of the first), in s."""
    raw, n, reps = fan["raw"], fan["settings"]["messages"], fan["settings"]["replicas"]
    own = _median(raw["broadcast x1"], lambda r: r["cpu_s"][0] / n)
    per_replica = _median(raw[f"broadcast x{reps}"], lambda r: sum(r["cpu_s"]) / len(r["cpu_s"]))
    return own, max(0.0, (per_replica - own * n / reps) / (n * (reps - 1) / reps))


def load_cluster_units(results: Path = RESULTS) -> ClusterUnits | None:
    """The cluster's unit costs from ``fanout-cluster.json``; None without the file."""
    path = results / "fanout-cluster.json"
    if not path.exists():
        return None
    fan = json.loads(path.read_text())
    raw, n = fan["raw"], fan["settings"]["messages"]
    if "sharded x1" not in raw or any("redis_primary_cpu_s" not in r for r in raw["broadcast x1"]):
        raise SystemExit(f"{path} lacks the sharded one-replica run or the primaries' CPU (it was "
                         "written by an older bench.fanout or without --single): run `python -m "
                         "bench.fanout --redis cluster --modes broadcast,sharded`, or restore the "
                         "file from git")  # fmt: skip
    own, foreign = _own_and_foreign(fan)
    return ClusterUnits(own_s=own, foreign_s=foreign,
                        sharded_own_s=_median(raw["sharded x1"], lambda r: r["cpu_s"][0] / n),
                        # Broadcast's and sharded's: the model picks either fan-out.
                        primary_s=_median(raw["broadcast x1"] + raw["sharded x1"],
                                          lambda r: r["redis_primary_cpu_s"] / n),
                        source=f"fanout-cluster.json ({fan['machine']['date']})")  # fmt: skip


def load_units(results: Path = RESULTS) -> Units:
    fan = json.loads((results / "fanout.json").read_text())
    raw = fan["raw"]
    n = fan["settings"]["messages"]
    one_b, one_i = raw["broadcast x1"], raw["interest x1"]
    own, foreign = _own_and_foreign(fan)
    router = json.loads((results / "router.json").read_text())
    idle = next((x for x in router.get("idle", []) if x["kind"] == "router"), None)
    if idle is None:
        raise SystemExit(f"{results / 'router.json'} holds no idle-connection measurement (it was "
                         "written with --idle 0): run `python -m bench.router` with --idle > 0, "
                         "or restore the file from git")  # fmt: skip

    def get(k: str) -> float:
        return _median(one_b, lambda r: r.get(k, math.nan))

    return Units(own_s=own, foreign_s=foreign, interest_own_s=_median(one_i, lambda r: r["cpu_s"][0] / n),
                 redis_s=_median(one_b, lambda r: r["redis_cpu_s"] / n),
                 redis_commands=get("redis_commands_per_notification"),
                 redis_bytes_out=get("redis_bytes_out_per_notification"),
                 redis_memory=get("redis_memory_bytes_per_notification"),
                 conn_bytes=idle["kib_per_connection"] * 1024,
                 source=f"fanout.json ({fan['machine']['date']}), router.json ({router['machine']['date']})",
                 cluster=load_cluster_units(results))  # fmt: skip


@dataclass(frozen=True)
class Plan:
    teachers: int
    rate: int
    replicas: int
    fanout: str
    redis_primaries: int
    redis_cluster: bool
    partitions: int
    connect_tasks: int
    first_limit: str


def _replicas(rate: int, floor: int, own_s: float, foreign_s: float,
              others: dict[str, float]) -> tuple[int, str]:  # fmt: skip
    """The fewest router replicas for ``rate`` and the fan-out that needs them:
    broadcast (every replica also routes everyone else's notifications, at
    ``foreign_s`` each) or one of ``others`` (mode -> CPU per notification of
    its own, nothing foreign); broadcast on a tie. At least ``floor``."""
    choices = []
    spare = CORE_BUDGET - rate * foreign_s
    if spare > 0:
        choices.append((max(floor, math.ceil(rate * own_s / spare)), "broadcast"))
    for mode, own in others.items():
        choices.append((max(floor, math.ceil(rate * own / CORE_BUDGET)), mode))
    return min(choices, key=lambda c: c[0])


def plan(u: Units, teachers: int, rate: int) -> Plan:
    """What ``teachers`` connected teachers at ``rate`` notifications/s need."""
    floor = max(math.ceil(teachers / MAX_CONNECTIONS),
                math.ceil(teachers * u.conn_bytes / CONN_MEMORY_BYTES))  # fmt: skip
    # Past one Redis, a cluster with its own measured costs (if there are any).
    c = u.cluster if rate * u.redis_s > CORE_BUDGET else None
    if c is not None:
        own, foreign, redis_s, others = (
            c.own_s,
            c.foreign_s,
            c.primary_s,
            {"sharded": c.sharded_own_s},
        )
    else:  # one Redis carries it (or no cluster was measured: sized by one Redis' costs)
        own, foreign, redis_s, others = (
            u.own_s,
            u.foreign_s,
            u.redis_s,
            {"interest": u.interest_own_s},
        )
    replicas, fanout = _replicas(rate, floor, own, foreign, others)
    redis_need = rate * redis_s / CORE_BUDGET
    redis = max(1, math.ceil(redis_need))
    cluster = c is not None or redis > 1
    if cluster:
        redis = max(redis, MIN_CLUSTER_PRIMARIES)
    tasks = math.ceil(rate / CONNECT_TASK_EVENTS_PER_S)
    # How many of each one part alone would need: the largest saturates first.
    needs = {"router CPU": rate * (own + foreign) / CORE_BUDGET,
             "connections per replica": teachers / MAX_CONNECTIONS,
             "router memory": teachers * u.conn_bytes / CONN_MEMORY_BYTES,
             "Redis CPU": redis_need,
             "the Debezium task": rate / CONNECT_TASK_EVENTS_PER_S}  # fmt: skip
    first = max(needs, key=lambda k: needs[k])
    return Plan(teachers, rate, replicas, fanout, redis, cluster, max(6, replicas), tasks,
                f"{first} ({needs[first]:.1f}x one)")  # fmt: skip


def table(u: Units) -> str:
    c = u.cluster
    lines = [
        f"Computed by `python -m bench.capacity` from {u.source}"
        + (f", {c.source}" if c else "")
        + f". Unit costs: router "
        f"{u.own_s * 1e6:.0f} us of CPU per notification it ingests and delivers (interest fan-out "
        f"{u.interest_own_s * 1e6:.0f} us), {u.foreign_s * 1e6:.0f} us per notification of a teacher "
        f"on another replica (broadcast only); Redis {u.redis_s * 1e6:.0f} us of CPU"
        + (
            f", {u.redis_commands:.1f} commands, {u.redis_bytes_out:,.0f} bytes sent and "
            f"{u.redis_memory:,.0f} bytes of memory"
            if not math.isnan(u.redis_commands)
            else ""
        )
        + f" per notification; {u.conn_bytes / 1024:.1f} KiB of router memory per idle "
        f"connection; {CONNECT_TASK_EVENTS_PER_S:,.0f} events/s per Debezium task."
        + (
            f" On a Redis Cluster: router {c.own_s * 1e6:.0f} us per notification (sharded "
            f"fan-out {c.sharded_own_s * 1e6:.0f} us), {c.foreign_s * 1e6:.1f} us per foreign "
            f"one (broadcast); the primaries {c.primary_s * 1e6:.0f} us of CPU per notification "
            "in all."
            if c
            else " No cluster was measured (`python -m bench.fanout --redis cluster`), so a "
            "cluster is sized by one Redis' costs."
        ),
        "",
        "| teachers | notifications/s | router replicas (fan-out) | Redis | partitions "
        "| Debezium connectors (tasks) | saturates first |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in TEACHERS:
        for r in RATES:
            p = plan(u, t, r)
            redis = f"cluster of {p.redis_primaries} primaries" if p.redis_cluster else "1"
            lines.append(f"| {t:,} | {r:,} | {p.replicas} ({p.fanout}) | {redis} | "
                         f"{p.partitions} | {p.connect_tasks} | {p.first_limit} |")  # fmt: skip
    return "\n".join(lines)


def write(text: str, doc: Path = DOC) -> None:
    body = doc.read_text()
    start, end = body.index(BEGIN) + len(BEGIN), body.index(END)
    doc.write_text(body[:start] + "\n" + text + "\n" + body[end:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"replace the table in {DOC.name}")
    args = ap.parse_args()
    text = table(load_units())
    print(text)
    if args.write:
        write(text)
        print(f"\nwrote the table into {DOC}")


if __name__ == "__main__":
    main()
