"""Redis' cost per ingested notification: the router's store alone (the ingest
script, batches of 500 over 1,000 teachers, one fan-out subscriber listening),
no Kafka and no sockets.

    python -m bench.store [--notifications 50000] [--rounds 5]

Prints, per round, Redis' CPU (``INFO cpu``) and the script's own time
(``INFO commandstats``) per notification, and the commands the script ran per
notification. Run it from two checkouts in turn (their working directories) to
compare versions of the script; rounds alternate nothing, so compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from typing import Any

import redis
import redis.asyncio as aioredis

from bench.common import bench_stack, redis_cpu_seconds, summary, write_result
from bench.router import body
from router.decode import Routable, decode
from router.store import Store

BATCH = 500
TEACHERS = 1000


def _records(n: int) -> list[Routable]:
    created = b"2026-12-02T10:00:00Z"
    return [decode(body(f"t-{i % TEACHERS}"), [("id", uuid.uuid4().hex.encode()),
                                               ("created_at", created)])
            for i in range(n)]  # fmt: skip


async def _round(url: str, n: int) -> dict[str, float]:
    sync = redis.Redis.from_url(url)
    client = aioredis.Redis.from_url(url)
    prefix = f"bs{uuid.uuid4().hex[:8]}"
    store = Store(client, prefix=prefix, dedupe_ttl_s=3600, history_maxlen=1000,
                  history_ttl_s=3600, pending_max=500)  # fmt: skip
    records = _records(n)
    received = 0
    all_received = asyncio.Event()
    pubsub = client.pubsub()
    await pubsub.subscribe(store.channel)

    async def listen() -> None:
        nonlocal received
        async for msg in pubsub.listen():
            if msg["type"] == "message":
                received += 1
                if received >= -(-n // BATCH):
                    all_received.set()

    listener = asyncio.create_task(listen())
    try:
        await asyncio.sleep(0.2)
        sync.config_resetstat()
        cpu0 = redis_cpu_seconds(url)
        for i in range(0, n, BATCH):
            await store.ingest(records[i : i + BATCH], received_at=time.time())
        cpu1 = redis_cpu_seconds(url)
        stats: dict[str, Any] = sync.info("commandstats")  # type: ignore[assignment]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_received.wait(), 10)
    finally:
        listener.cancel()
        await pubsub.aclose()
        keys = list(sync.scan_iter(f"{prefix}:*", count=10_000))
        for j in range(0, len(keys), 1000):
            sync.delete(*keys[j : j + 1000])
        await client.aclose()
        sync.close()
    script = stats.get("cmdstat_evalsha", {}).get("usec", 0)
    inner = sum(v["calls"] for k, v in stats.items()
                if k not in ("cmdstat_evalsha", "cmdstat_config|resetstat", "cmdstat_info"))  # fmt: skip
    return {"redis_cpu_us": 1e6 * (cpu1 - cpu0) / n, "script_us": script / n,
            "commands": inner / n, "messages": received}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notifications", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rounds = []
    with bench_stack() as stack:
        for i in range(args.rounds):
            res = asyncio.run(_round(stack.redis_url, args.notifications))
            rounds.append(res)
            print(f"round {i + 1}: Redis CPU {res['redis_cpu_us']:.1f} us/notification, script "
                  f"{res['script_us']:.1f} us, {res['commands']:.2f} commands/notification, "
                  f"{res['messages']:.0f} fan-out messages", flush=True)  # fmt: skip
    out = {"settings": vars(args), "rounds": rounds,
           **{k: summary([r[k] for r in rounds]) for k in ("redis_cpu_us", "script_us", "commands")}}  # fmt: skip
    path = write_result("store", out)
    print(f"Redis CPU per notification: median {statistics.median(r['redis_cpu_us'] for r in rounds):.1f} us"
          f"; wrote {path}")  # fmt: skip


if __name__ == "__main__":
    main()
