"""The baseline: a bare `websockets` broadcast loop fed the same Kafka messages.

No validation, no Redis, no dedupe, no history: consume, look up the teacher's
connections, send. Whatever the router costs beyond this is ours.

    python -m bench.bare_broadcast BOOTSTRAP TOPIC GROUP PORT
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import threading

import jwt
from confluent_kafka import Consumer
from websockets.asyncio.server import ServerConnection, serve

conns: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    first = json.loads(await ws.recv())
    teacher = jwt.decode(first["token"], options={"verify_signature": False})["sub"]
    conns.setdefault(teacher, set()).add(ws)
    await ws.send(
        '{"type":"replay_done","recovered":true,"replayed":0,"pending":0,"position":"0-0"}'
    )
    try:
        await ws.wait_closed()
    finally:
        conns[teacher].discard(ws)


def dispatch(batch: list[tuple[str, str]]) -> None:
    for teacher, text in batch:
        for ws in conns.get(teacher, ()):
            asyncio.ensure_future(ws.send(text))  # noqa: RUF006 - the baseline does the minimum


def consume(
    bootstrap: str, topic: str, group: str, loop: asyncio.AbstractEventLoop, stop: threading.Event
) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "latest",
                  "session.timeout.ms": 6000, "fetch.wait.max.ms": 10})  # fmt: skip
    c.subscribe([topic])
    while not stop.is_set():
        msgs = c.consume(500, 0.05)
        batch = []
        for m in msgs:
            if m.error() is not None:
                continue
            eid = dict(m.headers() or []).get("id", b"").decode()
            batch.append(((m.key() or b"").decode(), '{"type":"notification","id":"' + eid + '","notification":'
                          + (m.value() or b"{}").decode() + "}"))  # fmt: skip
        if batch:
            loop.call_soon_threadsafe(dispatch, batch)
    c.close()


async def main() -> None:
    bootstrap, topic, group, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tstop = threading.Event()
    t = threading.Thread(target=consume, args=(bootstrap, topic, group, loop, tstop), daemon=True)
    # Same as the router's default: no permessage-deflate.
    async with serve(handler, "127.0.0.1", port, max_queue=None, compression=None):
        t.start()
        print("ready", flush=True)
        await stop.wait()
        tstop.set()
        t.join(5)


if __name__ == "__main__":
    asyncio.run(main())
