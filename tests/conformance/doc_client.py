"""A client written from docs/protocol.md alone ("What a client must do"), not
from the router's code: it imports nothing of this project. Other clients
(Node, browser, mobile) are to behave like it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


@dataclass
class Closed:
    code: int
    reason: str


@dataclass
class DocClient:
    url: str  # ws://host:port/ws
    position: str | None = None  # rule 1: one position, kept across connections
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)  # rule 3: by id
    frames: list[dict[str, Any]] = field(default_factory=list)  # of the current connection
    errors: list[dict[str, Any]] = field(default_factory=list)
    ws: ClientConnection | None = None

    async def open(self, token: str, *, header: bool = False,
                   resume: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Connect, authenticate, resume from the kept position (rule 2) and read
        up to the first replay_done; return it."""
        resume = resume if resume is not None else self.position
        self.frames = []
        if header:
            query = f"?resume={resume}" if resume else ""
            self.ws = await connect(self.url + query,
                                    additional_headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        else:
            self.ws = await connect(self.url)
            auth: dict[str, Any] = {"type": "auth", "token": token}
            if resume:
                auth["resume"] = resume
            await self.ws.send(json.dumps(auth))
        return await self.until("replay_done")

    def _take(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        kind = frame["type"]
        if kind == "notification":
            if frame["pending"]:
                self.actions[frame["id"]] = frame  # rule 3; no position from it (rule 1)
            else:
                self.position = frame["position"]
                if frame["notification"].get("action_required"):
                    self.actions[frame["id"]] = frame
        elif kind == "replay_done":
            self.position = frame["position"]
        elif kind == "acked":
            self.actions.pop(frame["id"], None)
        elif kind == "error":
            self.errors.append(frame)

    async def until(self, kind: str, *, count: int = 1, timeout: float = 20) -> dict[str, Any]:
        """Read frames until the ``count``-th frame of ``kind`` (of this connection)."""
        assert self.ws is not None

        async def read() -> dict[str, Any]:
            assert self.ws is not None
            while True:
                hits = [f for f in self.frames if f["type"] == kind]
                if len(hits) >= count:
                    return hits[count - 1]
                self._take(json.loads(await self.ws.recv()))

        return await asyncio.wait_for(read(), timeout)

    async def quiet(self, seconds: float = 0.5) -> None:
        """Read whatever comes for ``seconds``."""
        assert self.ws is not None
        try:
            while True:
                self._take(json.loads(await asyncio.wait_for(self.ws.recv(), seconds)))
        except TimeoutError:
            return

    async def send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(frame))

    async def closed(self, timeout: float = 10) -> Closed:
        """Read until the server closes; its code and reason."""
        assert self.ws is not None
        try:
            while True:
                self._take(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return Closed(exc.rcvd.code, exc.rcvd.reason)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    def notifications(self, *, pending: bool | None = None) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "notification"
                and (pending is None or f["pending"] is pending)]  # fmt: skip
