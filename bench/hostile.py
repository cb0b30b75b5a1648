"""One token against everyone: connections of one teacher that reconnect in a
loop, each asking for the whole history (``resume`` "0-0"), beside well-behaved
teachers receiving live notifications at a steady rate; the others' latency and
the router's CPU without the loop and with it, side by side.

    python -m bench.hostile [--loops 10] [--history 1000] [--seconds 15]
                            [--rate 500] [--teachers 100] [--runs 2] [--attack replay|acks]

The loop runs in a process of its own (``python -m bench.hostile loop ...``):
``--loops`` connections at once (the router's default allows 10 per teacher),
each connecting, authenticating with ``resume`` "0-0", reading until
``replay_done`` or the close, and connecting again; with ``--attack acks``
each connection instead sends 40 acks of unknown ids (a Redis call each) once
synced, reads the 40 answers and connects again. Reported per phase: the
victims' latency (producer send -> frame received) p50/p99, router CPU per
second, and the loop's syncs, replayed frames and closes by code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import (
    bench_stack,
    pct,
    python_proc,
    summary,
    tree_cpu_seconds,
    write_result,
)
from bench.router import (
    SECRET,
    client_latencies_ms,
    drop_keys,
    produce_all,
    produce_paced,
    record_for,
    start_server,
    stop_server,
)
from relay.topics import ensure_topic
from stack.procs import free_port
from stack.state import StackState

ACKS = 40  # frames a new connection may send at once (OUTBOX_RATE_LIMIT_BURST)


async def _loop(url: str, teacher: str, loops: int, out: str, attack: str = "replay") -> None:
    """``loops`` connections of ``teacher`` reconnecting until SIGTERM, each
    resyncing from "0-0" (``attack`` "replay") or sending ``ACKS`` acks of
    unknown ids once synced ("acks"); writes a JSON summary to ``out``."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    from router.auth import mint

    token = mint(SECRET, teacher, 3600, now=time.time())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tally: Counter[str] = Counter()

    async def one() -> None:
        while not stop.is_set():
            try:
                async with connect(url, max_size=2**22, max_queue=None, open_timeout=10,
                                   ping_interval=None) as ws:  # fmt: skip
                    auth = {"type": "auth", "token": token}
                    if attack == "replay":
                        auth["resume"] = "0-0"
                    await ws.send(json.dumps(auth))
                    if attack == "acks":
                        async for raw in ws:
                            if isinstance(raw, str) and '"replay_done"' in raw:
                                break
                        for _ in range(ACKS):
                            await ws.send(f'{{"type":"ack","id":"{uuid.uuid4()}"}}')
                        tally["acks"] += ACKS
                    answered = 0
                    async for raw in ws:
                        if isinstance(raw, str) and raw.startswith('{"type":"notification"'):
                            tally["frames"] += 1
                        elif isinstance(raw, str) and '"replay_done"' in raw:
                            tally["syncs"] += 1
                            break
                        elif isinstance(raw, str) and '"error"' in raw:
                            tally["error_frames"] += 1
                            answered += 1
                            if attack == "acks" and answered >= ACKS:
                                break
            except ConnectionClosed as exc:
                tally[f"closed {exc.rcvd.code if exc.rcvd else 'abnormal'}"] += 1
            except InvalidStatus as exc:
                tally[f"http {exc.response.status_code}"] += 1
            except (OSError, TimeoutError) as exc:
                tally[type(exc).__name__] += 1
                await asyncio.sleep(0.05)

    t0 = time.monotonic()
    tasks = [asyncio.create_task(one()) for _ in range(loops)]
    print("ready", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    summary_text = json.dumps({"seconds": time.monotonic() - t0, **tally})
    await asyncio.to_thread(Path(out).write_text, summary_text)


def seed(stack: StackState, url: str, topic: str, teacher: str, history: int) -> None:
    """``history`` notifications of ``teacher``, recorded by the router: a
    connection made first (no resume, so no replay) receives them all live."""
    from websockets.sync.client import connect

    from router.auth import mint

    token = mint(SECRET, teacher, 3600, now=time.time())
    with connect(url, max_size=2**22) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        while '"replay_done"' not in str(ws.recv(timeout=30)):
            pass
        produce_all(stack.kafka_bootstrap, topic, (record_for(teacher) for _ in range(history)))
        got = 0
        while got < history:
            if str(ws.recv(timeout=60)).startswith('{"type":"notification"'):
                got += 1


def phase(stack: StackState, args: argparse.Namespace, server: subprocess.Popen[str], url: str,
          topic: str, prefix: str, workdir: Path, hostile: str | None) -> dict[str, Any]:  # fmt: skip
    """Victims at ``--rate`` for ``--seconds``, with the loop of ``hostile`` or without."""
    u = uuid.uuid4().hex[:6]
    recv = workdir / f"recv-{u}.jsonl"
    clients = python_proc(["-m", "bench.clients", url, SECRET, str(args.teachers), "1", str(recv),
                           "--prefix", prefix], stdout=subprocess.PIPE)  # fmt: skip
    loop: subprocess.Popen[str] | None = None
    loop_out = workdir / f"loop-{u}.json"
    try:
        assert clients.stdout is not None and "ready" in clients.stdout.readline()
        if hostile is not None:
            loop = python_proc(["-m", "bench.hostile", "loop", url, hostile, str(args.loops),
                                str(loop_out), args.attack], stdout=subprocess.PIPE)  # fmt: skip
            assert loop.stdout is not None and "ready" in loop.stdout.readline()
            time.sleep(1)
        cpu0, t0 = tree_cpu_seconds(server.pid), time.monotonic()
        sent = produce_paced(stack.kafka_bootstrap, topic, args.rate, args.seconds, args.teachers,
                             prefix)  # fmt: skip
        cpu1, t1 = tree_cpu_seconds(server.pid), time.monotonic()
        time.sleep(3)  # the tail arrives
    finally:
        if loop is not None:
            loop.send_signal(signal.SIGTERM)
            loop.communicate(timeout=60)
        clients.send_signal(signal.SIGTERM)
        clients.communicate(timeout=120)
    lat = client_latencies_ms(recv, sent)
    out: dict[str, Any] = {"hostile": hostile is not None, "produced": len(sent),
                           "received": len(lat), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                           "router_cpu_per_s": (cpu1 - cpu0) / (t1 - t0)}  # fmt: skip
    if loop is not None:
        tally = json.loads(loop_out.read_text())
        secs = tally.pop("seconds")
        out["loop"] = tally
        out["loop_syncs_per_s"] = tally.get("syncs", 0) / secs
        out["loop_frames_per_s"] = tally.get("frames", 0) / secs
        out["loop_acks_per_s"] = tally.get("acks", 0) / secs
    return out


def fresh_phase(stack: StackState, args: argparse.Namespace, workdir: Path,
                hostile: bool) -> dict[str, Any]:  # fmt: skip
    """One phase on a topic, router and history of its own (the embedded broker
    slows down as a topic's batches pile up: a phase never inherits another's)."""
    u = uuid.uuid4().hex[:8]
    topic, group, prefix, loop_teacher = f"bench.hostile.{u}", f"h{u}", f"ht{u}", f"hx{u}-loop"
    ensure_topic(stack.kafka_bootstrap, topic, 6)
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    # The router's own limits for one teacher, not bench.router's raised ones.
    server = start_server("router", stack, topic, port, workdir, group,
                          {"OUTBOX_MAX_CONNECTIONS_PER_TEACHER": "10",
                           "OUTBOX_SEND_QUEUE_MAX": "10000"})  # fmt: skip
    try:
        if hostile and args.attack == "replay":
            seed(stack, url, topic, loop_teacher, args.history)
        return phase(stack, args, server, url, topic, prefix, workdir,
                     loop_teacher if hostile else None)  # fmt: skip
    finally:
        stop_server(server, "router")
        drop_keys(stack, f"b{group}")


def main() -> None:
    if sys.argv[1:2] == ["loop"]:
        url, teacher, loops, out, attack = sys.argv[2:7]
        asyncio.run(_loop(url, teacher, int(loops), out, attack))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", type=int, default=10, help="connections of the one teacher")
    ap.add_argument("--history", type=int, default=1000, help="its history, replayed each sync")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rate", type=int, default=500, help="notifications/s to the other teachers")
    ap.add_argument(
        "--teachers", type=int, default=100, help="well-behaved teachers, 1 connection each"
    )
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--attack", choices=("replay", "acks"), default="replay",
                    help="what each connection of the loop does: a resume from 0-0, or "
                    f"{ACKS} acks of unknown ids")  # fmt: skip
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="outbox-bench-hostile-"))
    runs: dict[str, list[dict[str, Any]]] = {"quiet": [], "hostile": []}
    try:
        with bench_stack() as stack:
            for r in range(args.runs):
                for kind in ("quiet", "hostile") if r % 2 == 0 else ("hostile", "quiet"):
                    res = fresh_phase(stack, args, workdir, kind == "hostile")
                    runs[kind].append(res)
                    print(f"run {r + 1} {kind:<7}: p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
                          f"{res['received']}/{res['produced']} received, router "
                          f"{res['router_cpu_per_s']:.2f} CPU s/s"
                          + (f"; loop {res['loop_syncs_per_s']:.1f} syncs/s, "
                             f"{res['loop_frames_per_s']:,.0f} frames/s, {res['loop']}"
                             if kind == "hostile" else ""), flush=True)  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    agg = {kind: {k: summary([x[k] for x in rs])
                  for k in ("p50_ms", "p99_ms", "router_cpu_per_s")} for kind, rs in runs.items()}  # fmt: skip
    agg["hostile"]["loop_frames_per_s"] = summary([x["loop_frames_per_s"] for x in runs["hostile"]])
    path = write_result(
        "hostile" if args.attack == "replay" else f"hostile-{args.attack}",
        {"settings": vars(args), "results": agg, "raw": runs},
    )
    print(json.dumps({k: {m: v["median"] for m, v in d.items()} for k, d in agg.items()}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
