"""End to end: commit in Postgres to frame received by WebSocket clients, through
the real embedded pipeline, with our tuned connector and with Debezium's defaults,
measured side by side in one run.

    python -m bench.e2e [--rates 100,1000,5000] [--duration 30] [--runs 3]
                        [--teachers 50] [--conns 4] [--warmup 5] [--partitions 6]
                        [--configs tuned,default] [--window 10] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from bench.common import (
    bench_stack,
    cpu_seconds,
    pct,
    python_proc,
    server_cpu_seconds,
    summary,
    tree_cpu_seconds,
    wait_for_count,
    write_result,
)
from outbox import stages
from relay.connector_config import render
from relay.migrations import migrate
from relay.resources import data_dir
from relay.settings import RelaySettings
from relay.topics import ensure_topic
from stack.manager import create_database, drop_database
from stack.procs import free_port, stop_pid
from stack.state import StackState

STAGE_ORDER = ("capture", "ship", "route", "deliver", "total")
SECRET = "bench-secret-0123456789abcdef0123456789"
# What a user gets without our tuning: Debezium's default poll interval and
# producer batching.
DEFAULTS = {"poll.interval.ms": None, "producer.override.linger.ms": None}


def overrides(label: str) -> dict[str, str | None]:
    """Connector overrides of a config label: ``tuned`` (ours), ``default``
    (Debezium's), ``lingerN`` (ours with the producer's ``linger.ms=N``),
    ``pollN`` (ours with Debezium's ``poll.interval.ms=N``), ``batchN`` (ours with
    the producer's ``batch.size=N`` bytes; Java's default is 16,384), ``inflightN`` (ours
    with the producer's ``max.in.flight.requests.per.connection=N``), ``partsN``
    (ours on a topic of N partitions, see :func:`partitions`), or several of them
    joined by ``+``."""
    if label == "tuned":
        return {}
    if label == "default":
        return dict(DEFAULTS)
    if label.startswith("linger") and label[6:].isdigit():
        return {"producer.override.linger.ms": label[6:]}
    if label.startswith("poll") and label[4:].isdigit():
        return {"poll.interval.ms": label[4:]}
    if label.startswith("batch") and label[5:].isdigit():
        return {"producer.override.batch.size": label[5:]}
    if label.startswith("inflight") and label[8:].isdigit():
        return {"producer.override.max.in.flight.requests.per.connection": label[8:]}
    if _parts(label):
        return {}
    if "+" in label:
        return {k: v for part in label.split("+") for k, v in overrides(part).items()}
    raise SystemExit(
        f"unknown config {label!r}: tuned, default, lingerN, pollN, batchN, inflightN, partsN "
        "or several joined by +"
    )


def default_base(label: str) -> str | None:
    """The label a ``default`` config is compared with: ``default`` -> ``tuned``,
    ``default+parts1`` -> ``parts1``; None for a label without ``default``."""
    parts = label.split("+")
    if "default" not in parts:
        return None
    rest = [p for p in parts if p != "default"]
    return "+".join(rest) if rest else "tuned"


def partitions(label: str, default: int) -> int:
    """The topic's partitions for a config label: N of its ``partsN`` part, else
    ``default`` (``--partitions``)."""
    return next((n for part in label.split("+") if (n := _parts(part))), default)


def _parts(part: str) -> int | None:
    """N of a ``partsN`` label part (N > 0), else None."""
    n = int(part[5:]) if part.startswith("parts") and part[5:].isdigit() else 0
    return n or None


def _admin(stack: StackState) -> str:
    return stack.pg_dsn.rsplit("/", 1)[0] + "/postgres"


# The processes whose CPU a measurement reports, in this order; "load" is the
# bench's own writer and clients (children of this process, counted whole when
# they exit: the clients' connecting before the window included).
CPU_PARTS = ("postgres", "connect", "broker", "redis", "router", "load")


def pipeline_cpu(stack: StackState, router_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each part of the pipeline (``CPU_PARTS``)."""
    by_name: dict[str, float] = dict.fromkeys(CPU_PARTS, 0.0)
    for c in stack.components:
        part = c.name.split("-", 1)[0]
        if part == "postgres":
            by_name[part] += server_cpu_seconds(c.pid)
        elif part in by_name:
            by_name[part] += cpu_seconds(c.pid)
    by_name["router"] = tree_cpu_seconds(router_pid)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    by_name["load"] = kids.ru_utime + kids.ru_stime
    return by_name


def _db(stack: StackState) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    create_database(_admin(stack), name)
    dsn = stack.pg_dsn.rsplit("/", 1)[0] + f"/{name}"
    migrate(dsn, data_dir("sql"))
    return dsn


class Pipeline:
    """One connector config + one router + clients, for a series of rates."""

    def __init__(self, stack: StackState, label: str, overrides: dict[str, str | None], args: argparse.Namespace,
                 workdir: Path) -> None:  # fmt: skip
        self.stack, self.label, self.args, self.workdir = stack, label, args, workdir
        u = uuid.uuid4().hex[:8]
        name = label.replace("+", "_")  # a label joins overrides with +
        self.dsn = _db(stack)
        self.relay = RelaySettings(pg_dsn=self.dsn, connect_url=stack.connect_url, kafka_bootstrap=stack.kafka_bootstrap,
                                   topic=f"bench.{u}", connector_name=f"bench-{name}-{u}", topic_prefix=f"b{u}",
                                   slot_name=f"bench_{u}", heartbeat_interval_ms=1000,
                                   connector_overrides=overrides)  # fmt: skip
        self.prefix = f"{name}-{u}"
        self.router: subprocess.Popen[str] | None = None
        self.clients: subprocess.Popen[str] | None = None

    def start(self) -> None:
        ensure_topic(self.stack.kafka_bootstrap, self.relay.topic,
                     partitions(self.label, self.args.partitions))  # fmt: skip
        r = httpx.put(f"{self.stack.connect_url}/connectors/{self.relay.connector_name}/config",
                      json=render(self.relay), timeout=60)  # fmt: skip
        r.raise_for_status()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            st = httpx.get(
                f"{self.stack.connect_url}/connectors/{self.relay.connector_name}/status"
            ).json()
            if st.get("tasks") and all(t["state"] == "RUNNING" for t in st["tasks"]):
                break
            time.sleep(0.5)
        self.port = free_port()
        env = {**os.environ, **self.stack.env(), "OUTBOX_TOPIC": self.relay.topic, "OUTBOX_JWT_SECRET": SECRET,
               "OUTBOX_MAX_UNAUTHENTICATED_PER_IP": "100000",  # every load client is on 127.0.0.1
               "OUTBOX_ROUTER_PORT": str(self.port), "OUTBOX_GROUP_ID": f"router-{self.prefix}",
               "OUTBOX_REDIS_PREFIX": f"b{self.prefix}",
               "OUTBOX_KAFKA_MAX_POLL_INTERVAL_MS": "10000", "OUTBOX_SEND_QUEUE_MAX": "100000",
               "OUTBOX_MAX_CONNECTIONS_PER_TEACHER": "100"}  # fmt: skip
        log = open(self.workdir / f"router-{self.label}.log", "w")  # noqa: SIM115 - closed with the process
        self.router = python_proc(["-m", "outbox.cli", "router", "run", "--log-level", "WARNING"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1)
                if r.status_code == 200 and "kafka_assigned ok" in r.text:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError(f"router not ready; see {log.name}")

    def run_rate(self, rate: float) -> dict[str, Any]:
        a = self.args
        recv = self.workdir / f"recv-{self.label}-{rate}.jsonl"
        sent = self.workdir / f"sent-{self.label}-{rate}.jsonl"
        run_prefix = f"{self.prefix}-{int(rate)}-{uuid.uuid4().hex[:4]}"
        clients = python_proc(["-m", "bench.clients", f"ws://127.0.0.1:{self.port}/ws", SECRET, str(a.teachers),
                               str(a.conns), str(recv), "--prefix", run_prefix], stdout=subprocess.PIPE)  # fmt: skip
        assert clients.stdout is not None
        line = clients.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"clients failed: {line}")
        metrics_before = self._metrics()
        offsets_before = self._high_watermarks()
        assert self.router is not None
        cpu_before = pipeline_cpu(self.stack, self.router.pid)
        writer = python_proc(["-m", "bench.load_writer", self.dsn, str(rate), str(a.duration), str(a.teachers),
                              str(sent), "--prefix", run_prefix], stdout=subprocess.PIPE)  # fmt: skip
        wout, _ = writer.communicate(timeout=a.duration * 4 + 60)
        info = json.loads(wout.strip().splitlines()[-1])
        wait_for_count(clients.stdout, info["sent"] * a.conns, idle_s=3)
        clients.send_signal(signal.SIGTERM)
        clients.communicate(timeout=120)
        cpu_after = pipeline_cpu(self.stack, self.router.pid)
        metrics_after = self._metrics()
        captured = self._record_timestamps(offsets_before)
        router = {stage: stages.diff(stages.histogram(metrics_after, name),
                                     stages.histogram(metrics_before, name))
                  for stage, name in stages.ROUTER_STAGES.items()}  # fmt: skip
        out = analyse(sent, recv, a.conns, a.warmup, info, captured=captured, router=router,
                      window=a.window)  # fmt: skip
        # CPU per committed notification, by part (the clients' share covers
        # every connection's frame of it).
        out["cpu_us_per_notification"] = {
            part: (cpu_after[part] - cpu_before[part]) / max(1, info["sent"]) * 1e6
            for part in CPU_PARTS
        }
        return out

    def _metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text

    def _high_watermarks(self) -> dict[int, int]:
        c = Consumer(
            {"bootstrap.servers": self.stack.kafka_bootstrap, "group.id": "bench-e2e-probe"}
        )
        try:
            meta = c.list_topics(self.relay.topic, timeout=10).topics[self.relay.topic]
            return {p: c.get_watermark_offsets(TopicPartition(self.relay.topic, p), timeout=10)[1]
                    for p in sorted(meta.partitions)}  # fmt: skip
        finally:
            c.close()

    def _record_timestamps(self, start: dict[int, int]) -> dict[str, float]:
        """Event id -> the Kafka record's timestamp (epoch seconds) of every record
        written since ``start``: read after the window, so the reading costs the
        measurement nothing."""
        end = self._high_watermarks()
        out: dict[str, float] = {}
        c = Consumer({"bootstrap.servers": self.stack.kafka_bootstrap, "group.id": "bench-e2e-probe",
                      "enable.auto.commit": False})  # fmt: skip
        todo = {p for p in end if end[p] > start.get(p, 0)}
        c.assign([TopicPartition(self.relay.topic, p, start.get(p, 0)) for p in todo])
        deadline = time.monotonic() + 120
        try:
            while todo and time.monotonic() < deadline:
                for m in c.consume(1000, 1.0):
                    if m.error() is not None:
                        continue
                    eid = dict(m.headers() or []).get("id")
                    if eid is not None:
                        out[eid.decode()] = m.timestamp()[1] / 1000
                    if (m.offset() or 0) + 1 >= end[m.partition() or 0]:
                        todo.discard(m.partition() or 0)
        finally:
            c.close()
        return out

    def stop(self) -> None:
        if self.router and self.router.poll() is None:
            stop_pid(self.router.pid, expect="router", timeout=20)
        httpx.delete(f"{self.stack.connect_url}/connectors/{self.relay.connector_name}", timeout=30)
        drop_database(_admin(self.stack), self.dsn.rsplit("/", 1)[1])


def analyse(sent_path: Path, recv_path: Path, conns: int, warmup: float, info: dict[str, Any], *,
            captured: dict[str, float] | None = None,
            router: dict[str, list[tuple[float, float]]] | None = None,
            window: float = 10.0) -> dict[str, Any]:  # fmt: skip
    sent: dict[str, tuple[str, float]] = {}
    with open(sent_path) as f:
        for line in f:
            eid, teacher, t = json.loads(line)
            sent[eid] = (teacher, t)
    t0 = min((t for _, t in sent.values()), default=0.0) + warmup
    seen: dict[tuple[int, str], int] = {}
    lat: list[float] = []
    by_window: dict[int, list[float]] = {}
    start = t0 - warmup
    with open(recv_path) as f:
        for line in f:
            teacher, cid, eid, t = json.loads(line)
            key = (cid, eid)
            seen[key] = seen.get(key, 0) + 1
            if eid in sent and seen[key] == 1 and sent[eid][1] >= t0:
                ms = (t - sent[eid][1]) * 1000
                lat.append(ms)
                by_window.setdefault(int((sent[eid][1] - start) // window), []).append(ms)
    expected = len(sent) * conns
    got = sum(1 for (c, e) in seen if e in sent)
    dups = sum(n - 1 for n in seen.values() if n > 1)
    out = {"offered_rate": info.get("achieved_rate"), "sent": len(sent), "frames_expected": expected,
           "frames_received": got, "lost": expected - got, "duplicates": dups,
           "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99), "max_ms": max(lat, default=float("nan")),
           "windows": [{"from_s": w * window, "p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99), "frames": len(xs)}
                       for w, xs in sorted(by_window.items())]}  # fmt: skip
    if captured is not None and router is not None:
        out["stages"] = budget(sent, captured, router, lat, t0)
    return out


def budget(sent: dict[str, tuple[str, float]], captured: dict[str, float],
           router: dict[str, list[tuple[float, float]]], total_ms: list[float],
           t0: float) -> dict[str, dict[str, float]]:  # fmt: skip
    """p50/p99 of each stage (outbox/stages.py); ``deliver`` is what the total leaves."""
    capture = [(captured[e] - t) * 1000 for e, (_, t) in sent.items() if e in captured and t >= t0]
    out = {"capture": {"p50_ms": pct(capture, 50), "p99_ms": pct(capture, 99), "n": len(capture)}}
    for stage, buckets in router.items():
        out[stage] = {"p50_ms": stages.quantile(buckets, 0.5) * 1000,
                      "p99_ms": stages.quantile(buckets, 0.99) * 1000,
                      "n": buckets[-1][1] if buckets else 0}  # fmt: skip
    out["total"] = {"p50_ms": pct(total_ms, 50), "p99_ms": pct(total_ms, 99), "n": len(total_ms)}
    out["deliver"] = {k: max(0.0, out["total"][k] - sum(out[s][k] for s in ("capture", *router)))
                      for k in ("p50_ms", "p99_ms")} | {"n": 0}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="100,1000,5000")
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--teachers", type=int, default=50)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument(
        "--window", type=float, default=10, help="seconds per window of latency over time"
    )
    ap.add_argument("--configs", default="tuned,default")
    ap.add_argument("--partitions", type=int, default=6, help="of each pipeline's topic")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="a new topic, connector and router for every measurement (isolates runs)",
    )
    ap.add_argument("--name", default="e2e", help="result file name in bench/results/")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    # The work folder goes with the stack, also when a measurement fails.
    with tempfile.TemporaryDirectory(prefix="outbox-bench-e2e-") as tmp, bench_stack() as stack:
        workdir = Path(tmp)
        pipes = {}
        try:
            for label in args.configs.split(","):
                p = Pipeline(stack, label, overrides(label), args, workdir)
                pipes[label] = p
                p.start()
            for run in range(args.runs):
                for rate in rates:
                    for label in list(pipes):  # side by side, same process of measurement
                        if args.fresh and (run or rate != rates[0]):
                            pipes[label].stop()
                            pipes[label] = Pipeline(stack, label, overrides(label), args, workdir)
                            pipes[label].start()
                        p = pipes[label]
                        r = p.run_rate(rate)
                        results.setdefault(label, {}).setdefault(str(int(rate)), []).append(r)
                        print(f"run {run + 1} {label:<8} {rate:>6.0f}/s  p50 {r['p50_ms']:7.1f}  p99 {r['p99_ms']:7.1f}"
                              f"  max {r['max_ms']:7.1f} ms  lost {r['lost']} dup {r['duplicates']}"
                              f"  (achieved {r['offered_rate']:.0f}/s)", flush=True)  # fmt: skip
                        st = r.get("stages", {})
                        print("        p50/p99 ms  " + "  ".join(
                            f"{k} {st[k]['p50_ms']:.1f}/{st[k]['p99_ms']:.1f}" for k in STAGE_ORDER if k in st),
                            flush=True)  # fmt: skip
                        cpu = r["cpu_us_per_notification"]
                        print(f"        CPU us per notification  total {sum(cpu.values()):.0f}: " + "  ".join(
                            f"{k} {v:.0f}" for k, v in cpu.items()), flush=True)  # fmt: skip
                        if len(r["windows"]) > 2:
                            print("        p99 ms per window  " + " ".join(
                                f"{w['p99_ms']:.0f}" for w in r["windows"]), flush=True)  # fmt: skip
        finally:
            for p in pipes.values():
                p.stop()
    agg: dict[str, Any] = {}
    for label, by_rate in results.items():
        agg[label] = {rate: {k: summary([r[k] for r in runs]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms",
                             "offered_rate")} | {"lost": sum(r["lost"] for r in runs),
                                                 "duplicates": sum(r["duplicates"] for r in runs)}
                      for rate, runs in by_rate.items()}  # fmt: skip
        for rate, runs in by_rate.items():
            if all("stages" in r for r in runs):
                agg[label][rate]["stages"] = {
                    st: {k: summary([r["stages"][st][k] for r in runs]) for k in ("p50_ms", "p99_ms")}
                    for st in STAGE_ORDER}  # fmt: skip
            agg[label][rate]["cpu_us_per_notification"] = {
                part: summary([r["cpu_us_per_notification"][part] for r in runs])
                for part in CPU_PARTS
            }
    # Every "default+X" against "X" (Debezium's defaults vs ours on the same topic).
    pair_ratios = {
        f"{label} / {base}": {
            rate: agg[label][rate]["p50_ms"]["median"] / agg[base][rate]["p50_ms"]["median"]
            for rate in agg[label]
            if rate in agg[base]
        }
        for label in agg
        if (base := default_base(label)) in agg
    }
    ratios = pair_ratios.get("default / tuned", {})
    sustained = [int(r) for r, v in agg.get("tuned", {}).items() if v["p99_ms"]["median"] < 100 and v["lost"] == 0
                 and v["duplicates"] == 0]  # fmt: skip
    out = {"settings": vars(args), "results": agg, "raw": results, "p50_ratio_default_over_tuned": ratios,
           "p50_ratios": pair_ratios,
           "highest_rate_p99_under_100ms": max(sustained, default=None)}  # fmt: skip
    path = write_result(args.name, out)
    print(
        json.dumps(
            {
                "p50_ratio_default_over_tuned": ratios,
                "p50_ratios": pair_ratios,
                "highest_rate_p99_under_100ms": out["highest_rate_p99_under_100ms"],
            }
        )
    )
    print(f"wrote {path}")
    sys.exit(0)


if __name__ == "__main__":
    main()
