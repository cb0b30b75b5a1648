"""`outbox demo` as a user runs it (what `make demo` runs): its own embedded
stack, the relay and the router as processes, every catalog type, a rolled-back
transaction; and its clients, which follow docs/protocol.md's reconnect rule."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from outbox.demo import Tally, _client
from stack.procs import free_port, stop_pid

pytestmark = pytest.mark.e2e


def test_the_demo_delivers_every_notification_once_and_stops_what_it_started() -> None:
    p = subprocess.Popen([sys.executable, "-m", "outbox.cli", "demo", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        out, _ = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            stop_pid(p.pid, expect="outbox.cli", timeout=60)  # SIGTERM: it stops its stack
            p.communicate(timeout=60)
    assert p.returncode == 0, out
    assert "lost 0, duplicated 0" in out, out
    assert "rolled back and on a topic 0" in out, out
    assert "stopping everything the demo started" in out


async def test_a_demo_client_closed_as_too_slow_resumes_from_its_last_position() -> None:
    """A server that sends two notifications then closes 1013, then checks that
    the reconnect resumes from the second one's position and sends a third."""
    auths: list[dict[str, Any]] = []

    def frame(n: int) -> str:
        return json.dumps({"type": "notification", "id": f"e{n}", "position": f"1-{n}", "pending": False,
                           "notification": {"teacher_id": "t1", "priority": "low",
                                            "notification_type": "batch_files_uploaded"}})  # fmt: skip

    async def handler(ws: ServerConnection) -> None:
        auths.append(json.loads(await ws.recv()))
        recovered = len(auths) == 1
        await ws.send(json.dumps({"type": "replay_done", "recovered": recovered, "replayed": 0,
                                  "pending": 0, "position": "1-0" if recovered else "1-2"}))  # fmt: skip
        if len(auths) == 1:
            await ws.send(frame(1))
            await ws.send(frame(2))
            await ws.close(1013, "too slow")
        else:
            await ws.send(frame(3))
            await ws.close(1000)

    port = free_port()
    tally = Tally(sent={"e1": 0.0, "e2": 0.0, "e3": 0.0})
    async with serve(handler, "127.0.0.1", port):
        await asyncio.wait_for(_client(port, "tok", "t1", tally, asyncio.Event(), True), 20)
    assert [a.get("resume") for a in auths] == [None, "1-2"]
    assert tally.received == {"e1": 1, "e2": 1, "e3": 1}
    assert tally.reconnects == {1013: 1} and tally.unrecovered == 1
    assert "reconnected with resume 1 time(s) after a 1013 close" in tally.summary()
