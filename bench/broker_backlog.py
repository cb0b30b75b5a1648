"""How fast the broker serves a consumer that is behind: a partition holding N
record batches, read from its first offset.

    python -m bench.broker_backlog [--batches 1000,4000,12000] [--per-batch 6] [--limit 20]

Each size gets a fresh one-partition topic, written as ``--batches`` batches of
``--per-batch`` records of 600 bytes (an idempotent ``acks=all`` producer
flushed after each batch, as Connect's producer writes at a low ``linger.ms``),
then one consumer with the router's fetch settings reads it from offset 0 for at
most ``--limit`` seconds. Reported: records read and the seconds it took. A
router that falls behind on the dev stack is in exactly this position
(docs/operations.md, "The embedded broker over time").
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import bench_stack, write_result

VALUE = b"x" * 600


def fill(bootstrap: str, topic: str, batches: int, per_batch: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1)])[topic].result(timeout=30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                  "enable.idempotence": True})  # fmt: skip
    for _ in range(batches):
        for _ in range(per_batch):
            p.produce(topic, VALUE, key=b"teacher")
        p.flush(30)


def read_from_start(bootstrap: str, topic: str, want: int, limit_s: float) -> tuple[int, float]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})  # fmt: skip
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got, t0 = 0, time.monotonic()
        while got < want and time.monotonic() - t0 < limit_s:
            got += sum(1 for m in c.consume(1000, 0.5) if m.error() is None)
        return got, time.monotonic() - t0
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1000,4000,12000", help="comma-separated batch counts")
    ap.add_argument("--per-batch", type=int, default=6)
    ap.add_argument("--limit", type=float, default=20.0, help="seconds a read may take")
    args = ap.parse_args()
    sizes = [int(x) for x in args.batches.split(",") if x]
    results: list[dict[str, Any]] = []
    with bench_stack() as stack:
        for n in sizes:
            topic = f"bench.backlog.{n}.{uuid.uuid4().hex[:6]}"
            fill(stack.kafka_bootstrap, topic, n, args.per_batch)
            want = n * args.per_batch
            got, seconds = read_from_start(stack.kafka_bootstrap, topic, want, args.limit)
            results.append({"batches": n, "records": want, "read": got, "seconds": seconds})
            print(
                f"{n} batches of {args.per_batch}: read {got}/{want} in {seconds:.1f} s", flush=True
            )
    path = write_result("broker-backlog", {"settings": vars(args), "results": results})
    print(json.dumps(results))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
