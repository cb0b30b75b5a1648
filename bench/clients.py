"""A load-test client process: many WebSocket connections, every frame recorded.

    python -m bench.clients URL SECRET TEACHERS CONNS_PER_TEACHER OUT [--prefix P]

Prints "ready" when every connection has finished its sync, then "count N"
(frames so far) twice a second; on SIGTERM writes
``OUT`` (JSON lines: teacher, connection, event id, receive time, created_at)
and exits.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time

from websockets.asyncio.client import connect

from router.auth import mint

_PREFIX = '{"type":"notification","id":"'
_N = len(_PREFIX)


async def one(url: str, token: str, teacher: str, cid: int, frames: list[tuple[str, int, str, float]],
              ready: asyncio.Event, stop: asyncio.Event) -> None:  # fmt: skip
    async with connect(
        url, max_size=2**22, max_queue=None, open_timeout=60, ping_interval=None
    ) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        async for raw in ws:
            t = time.time()
            if raw.startswith(_PREFIX):
                # The id is the first field: avoid a full JSON parse per frame.
                eid = raw[_N : raw.index('"', _N)]
                frames.append((teacher, cid, eid, t))
            elif '"replay_done"' in raw:
                ready.set()


def _dump(out: str, frames: list[tuple[str, int, str, float]]) -> None:
    with open(out, "w") as f:
        for fr in frames:
            f.write(json.dumps(fr) + "\n")


async def main() -> None:
    url, secret, teachers_s, per_s, out = sys.argv[1:6]
    prefix = sys.argv[7] if len(sys.argv) > 7 and sys.argv[6] == "--prefix" else "bench-t"
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    teachers, per = int(teachers_s), int(per_s)
    frames: list[tuple[str, int, str, float]] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks, readies = [], []
    sem = asyncio.Semaphore(200)  # connect in waves

    async def guarded(*a: object) -> None:
        await one(*a)  # type: ignore[arg-type]

    cid = 0
    for t in range(teachers):
        teacher = f"{prefix}-{t}"
        token = mint(secret, teacher, 3600, now=time.time())
        for _ in range(per):
            ev = asyncio.Event()
            readies.append(ev)

            async def start(
                token: str = token, teacher: str = teacher, c: int = cid, ev: asyncio.Event = ev
            ) -> None:
                async with sem:
                    task = asyncio.create_task(guarded(url, token, teacher, c, frames, ev, stop))
                    await ev.wait()
                await task

            tasks.append(asyncio.create_task(start()))
            cid += 1
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies)), 600)
    print("ready", flush=True)

    async def progress() -> None:
        while True:
            print(f"count {len(frames)}", flush=True)
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(progress())
    await stop.wait()
    reporter.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.to_thread(_dump, out, frames)
    print(f"wrote {len(frames)} frames", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
