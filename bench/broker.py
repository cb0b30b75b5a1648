"""The broker alone over time: produce -> consume latency per time window, for
several topic layouts side by side, on fresh topics of the running broker.

    python -m bench.broker [--rate 1000] [--duration 120] [--window 30]
                           [--variants p6-l0,p48-l0,p6-l5]

A variant ``pN-lM`` is a topic of N partitions written by an idempotent
``acks=all`` producer with ``linger.ms=M`` (Connect's producer writes one record
batch per record at ``linger.ms=0``), keys spread over 1,000 teachers, read by a
consumer with the router's fetch settings. Options may follow, in any order:
``-wK`` reads with ``fetch.wait.max.ms=K`` instead of the router's 10 (tansu
holds a fetch that long when it finds nothing); ``-bN`` caps a record batch at
N bytes (``batch.size``: librdkafka's default is 1,000,000, the Java producer's
in Connect 16,384, which at 1,000/s cuts batches shorter than ``linger.ms``). Variants run one after another on
their own topic; the first 3 s (connections, first fetch) are left out; each window's p50/p99 shows whether the broker drifts as the
topic's batches pile up (see docs/operations.md, "The embedded broker over time").
"""

from __future__ import annotations

import argparse
import json
import struct
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import bench_stack, cpu_seconds, pct, write_result
from router.consumer import FETCH_WAIT_MAX_MS


def _parse(variant: str) -> tuple[int, int, int, int | None]:
    """Partitions, linger.ms, fetch.wait.max.ms and batch.size (None: the
    client's default) of a variant name."""
    p, l_, *opts = variant.split("-")
    wait, batch = FETCH_WAIT_MAX_MS, None
    for o in opts:
        if o[:1] == "w" and o[1:].isdigit():
            wait = int(o[1:])
        elif o[:1] == "b" and o[1:].isdigit():
            batch = int(o[1:])
        else:
            raise SystemExit(f"unknown variant option {o!r} in {variant!r}: wK or bN")
    return int(p.removeprefix("p")), int(l_.removeprefix("l")), wait, batch


def run_variant(bootstrap: str, broker_pid: int, variant: str, rate: float, duration: float,
                window: float, warmup: float = 3.0) -> dict[str, Any]:  # fmt: skip
    partitions, linger, fetch_wait, batch_bytes = _parse(variant)
    topic = f"bench.broker.{variant}.{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions)])[topic].result(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{topic}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": fetch_wait})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    lat: list[tuple[float, float]] = []  # (send time relative to start, latency ms)
    done = threading.Event()
    start = time.time()

    def consume() -> None:
        while not done.is_set():
            first = consumer.consume(1, 0.1)  # then what else is there, as the router reads
            for m in [*first, *consumer.consume(499, 0)] if first else []:
                if m.error() is None and m.value():
                    sent = struct.unpack("d", m.value()[:8])[0]
                    lat.append((sent - start, (time.time() - sent) * 1000))

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    cpu0 = cpu_seconds(broker_pid)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": linger, **({"batch.size": batch_bytes} if batch_bytes else {})})  # fmt: skip
    total = int(rate * duration)
    per_tick = max(1, round(rate / 100))  # 10 ms ticks, like the load writer's transactions
    pad = b"x" * 300  # about a notification's size
    i = 0
    t0 = time.monotonic()
    while i < total:
        due = t0 + i / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        for k in range(min(per_tick, total - i)):
            producer.produce(topic, struct.pack("d", time.time()) + pad, key=f"t-{(i + k) % 1000}")
        producer.poll(0)
        i += per_tick
    producer.flush(30)
    deadline = time.monotonic() + 60
    while len(lat) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    broker_cpu = cpu_seconds(broker_pid) - cpu0
    done.set()
    reader.join(5)
    consumer.close()
    admin.delete_topics([topic])
    windows = []
    w = 0.0
    while w < duration:
        xs = [ms for t, ms in lat if max(w, warmup) <= t < w + window]
        windows.append({"from_s": w, "p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99), "n": len(xs)})
        w += window
    return {"partitions": partitions, "linger_ms": linger, "fetch_wait_max_ms": fetch_wait,
            "batch_size": batch_bytes, "sent": total, "received": len(lat),
            "broker_cpu_s": broker_cpu, "broker_cpu_us_per_record": broker_cpu / total * 1e6,
            "windows": windows}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--duration", type=float, default=120)
    ap.add_argument("--window", type=float, default=30)
    ap.add_argument("--variants", default="p6-l0,p48-l0,p6-l5")
    ap.add_argument("--name", default="broker")
    args = ap.parse_args()
    out: dict[str, Any] = {}
    with bench_stack() as stack:
        for v in args.variants.split(","):
            pid = next(c.pid for c in stack.components if c.name == "broker")
            r = run_variant(stack.kafka_bootstrap, pid, v, args.rate, args.duration, args.window)
            out[v] = r
            ws = "  ".join(f"{x['p50_ms']:.1f}/{x['p99_ms']:.1f}" for x in r["windows"])
            print(f"{v:<12} received {r['received']}/{r['sent']}  broker CPU "
                  f"{r['broker_cpu_us_per_record']:.0f} us/record  p50/p99 ms per window: {ws}",
                  flush=True)  # fmt: skip
    path = write_result(args.name, {"settings": vars(args), "results": out})
    print(json.dumps({v: [w["p99_ms"] for w in r["windows"]] for v, r in out.items()}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
