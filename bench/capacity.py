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
- router memory per idle connection (``router.json``, 10,000 connections);
- one Debezium task: 8,800 events/s end to end (20,000 rows in 100-row
  transactions in 2.3 s on a 2-core machine; the stack recipe). One task per
  replication slot is Debezium's limit for Postgres.

Budgets: a router replica or a Redis primary may use 70 % of one core; a
replica holds at most ``OUTBOX_MAX_CONNECTIONS`` (20,000) connections and 4 GiB
of connection memory. One connection per teacher.
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
TEACHERS = (10_000, 100_000, 1_000_000)
RATES = (1_000, 10_000, 50_000)


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


def _median(runs: list[dict[str, Any]], f: Any) -> float:
    xs = sorted(f(r) for r in runs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def load_units(results: Path = RESULTS) -> Units:
    fan = json.loads((results / "fanout.json").read_text())
    raw = fan["raw"]
    n = fan["settings"]["messages"]
    reps = fan["settings"]["replicas"]
    one_b, one_i, many_b = raw["broadcast x1"], raw["interest x1"], raw[f"broadcast x{reps}"]
    own = _median(one_b, lambda r: r["cpu_s"][0] / n)
    per_replica = _median(many_b, lambda r: sum(r["cpu_s"]) / len(r["cpu_s"]))
    foreign = max(0.0, (per_replica - own * n / reps) / (n * (reps - 1) / reps))
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
                 source=f"fanout.json ({fan['machine']['date']}), router.json ({router['machine']['date']})")  # fmt: skip


@dataclass(frozen=True)
class Plan:
    teachers: int
    rate: int
    replicas: int
    fanout: str
    redis_primaries: int
    partitions: int
    connect_tasks: int
    first_limit: str


def plan(u: Units, teachers: int, rate: int) -> Plan:
    """What ``teachers`` connected teachers at ``rate`` notifications/s need."""
    by_conns = math.ceil(teachers / MAX_CONNECTIONS)
    by_memory = math.ceil(teachers * u.conn_bytes / CONN_MEMORY_BYTES)
    # Broadcast: every replica also routes everyone else's notifications.
    spare = CORE_BUDGET - rate * u.foreign_s
    by_cpu_broadcast = math.ceil(rate * u.own_s / spare) if spare > 0 else None
    by_cpu_interest = math.ceil(rate * u.interest_own_s / CORE_BUDGET)
    broadcast = max(by_conns, by_memory, by_cpu_broadcast) if by_cpu_broadcast else None
    interest = max(by_conns, by_memory, by_cpu_interest)
    if broadcast is not None and broadcast <= interest:
        replicas, fanout = broadcast, "broadcast"
    else:
        replicas, fanout = interest, "interest"
    redis = max(1, math.ceil(rate * u.redis_s / CORE_BUDGET))
    tasks = math.ceil(rate / CONNECT_TASK_EVENTS_PER_S)
    # How many of each one part alone would need: the largest saturates first.
    needs = {"router CPU": rate * (u.own_s + u.foreign_s) / CORE_BUDGET,
             "connections per replica": teachers / MAX_CONNECTIONS,
             "router memory": teachers * u.conn_bytes / CONN_MEMORY_BYTES,
             "Redis CPU": rate * u.redis_s / CORE_BUDGET,
             "the Debezium task": rate / CONNECT_TASK_EVENTS_PER_S}  # fmt: skip
    first = max(needs, key=lambda k: needs[k])
    return Plan(teachers, rate, replicas, fanout, redis, max(6, replicas), tasks,
                f"{first} ({needs[first]:.1f}x one)")  # fmt: skip


def table(u: Units) -> str:
    lines = [
        f"Computed by `python -m bench.capacity` from {u.source}. Unit costs: router "
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
        f"connection; {CONNECT_TASK_EVENTS_PER_S:,.0f} events/s per Debezium task.",
        "",
        "| teachers | notifications/s | router replicas (fan-out) | Redis primaries | partitions "
        "| Debezium connectors (tasks) | saturates first |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in TEACHERS:
        for r in RATES:
            p = plan(u, t, r)
            lines.append(f"| {t:,} | {r:,} | {p.replicas} ({p.fanout}) | {p.redis_primaries} | "
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
