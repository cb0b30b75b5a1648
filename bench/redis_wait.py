"""What waiting for a Redis replica costs the router's ingest
(``OUTBOX_REDIS_WAIT_REPLICAS``): the store's ingest call with and without
``WAIT 1``, alternated round by round on the same Redis, on a primary with one
replica and on a Redis Cluster of 3 primaries with a replica each (processes of
its own, started and stopped here).

    python -m bench.redis_wait [--notifications 20000] [--rounds 3]
                               [--topologies single,cluster] [--batch 500]

Prints, per round and mode, the time of one ingest call (a Kafka batch of
``--batch`` notifications over 1,000 teachers; on the cluster split by slot)
as p50 / p99 and notifications per second, and writes bench/results/redis-wait.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from bench.common import cleanup_on_sigterm, pct, summary, write_result
from bench.store import _records
from router.store import Store
from stack.manager import StackManager
from stack.settings import StackSettings


async def _round(url: str, cluster: bool, wait: int, n: int, batch: int) -> dict[str, float]:
    client: aioredis.Redis | RedisCluster = (
        RedisCluster.from_url(url) if cluster else aioredis.Redis.from_url(url)
    )
    prefix = f"bw{uuid.uuid4().hex[:8]}"
    store = Store(client, prefix=prefix, dedupe_ttl_s=600, history_maxlen=1000,
                  history_ttl_s=600, wait_replicas=wait, wait_timeout_ms=5000)  # fmt: skip
    records = _records(n)
    calls: list[float] = []
    try:
        await store.ingest(records[:10], received_at=time.time())  # scripts loaded, map read
        t0 = time.perf_counter()
        for i in range(10, n, batch):
            c0 = time.perf_counter()
            await store.ingest(records[i : i + batch], received_at=time.time())
            calls.append(time.perf_counter() - c0)
        took = time.perf_counter() - t0
    finally:
        await store.aclose()
        await client.aclose()
    ms = [1000 * c for c in calls]
    return {"call_p50_ms": pct(ms, 50), "call_p99_ms": pct(ms, 99),
            "per_s": (n - 10) / took}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notifications", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--topologies", default="single,cluster")
    args = ap.parse_args()
    cleanup_on_sigterm()  # its stack is stopped in the finally below
    out: dict[str, Any] = {"settings": vars(args)}
    for topology in args.topologies.split(","):
        tmp = Path(tempfile.mkdtemp(prefix="outbox-bench-wait-"))
        managers: list[StackManager] = []
        try:
            if topology == "cluster":
                managers = [StackManager(StackSettings(), state_dir=tmp / "c")]
                url = managers[0].start_redis_cluster()[0].url
            else:
                managers = [StackManager(StackSettings(), state_dir=tmp / "r")]
                url = managers[0].start_redis_with_replicas(1)[0].url
            runs: dict[str, list[dict[str, float]]] = {"no wait": [], "wait 1": []}
            for r in range(args.rounds):
                modes = [0, 1] if r % 2 == 0 else [1, 0]
                for wait in modes:
                    res = asyncio.run(
                        _round(url, topology == "cluster", wait, args.notifications, args.batch)
                    )
                    name = "wait 1" if wait else "no wait"
                    runs[name].append(res)
                    print(f"{topology} round {r + 1} {name:<7}: call p50 {res['call_p50_ms']:.2f} ms, "
                          f"p99 {res['call_p99_ms']:.2f} ms, {res['per_s']:,.0f} notifications/s",
                          flush=True)  # fmt: skip
            out[topology] = {name: {k: summary([x[k] for x in rs]) for k in rs[0]}
                             for name, rs in runs.items()}  # fmt: skip
            out[topology]["runs"] = runs
            ratio = [a["per_s"] / b["per_s"] for a, b in
                     zip(runs["wait 1"], runs["no wait"], strict=True)]  # fmt: skip
            out[topology]["throughput_wait_over_no_wait"] = summary(ratio)
        finally:
            for m in managers:
                m.stop_started()
            shutil.rmtree(tmp, ignore_errors=True)
    path = write_result("redis-wait", out)
    for topology in args.topologies.split(","):
        print(
            f"{topology}: throughput with WAIT / without, median "
            f"{out[topology]['throughput_wait_over_no_wait']['median']:.2f}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
