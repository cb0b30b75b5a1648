"""The relay daemon survives every answer Kafka Connect can give (httpx
MockTransport in front of the real client; no Connect needed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from relay.connect_api import ConnectClient
from relay.daemon import Relay
from relay.settings import RelaySettings
from relay.supervisor import Health
from stack.procs import free_port

Handler = Callable[[httpx.Request], httpx.Response]


def _settings() -> RelaySettings:
    # A Postgres nobody listens on: slot health is simply unknown.
    return RelaySettings(pg_dsn=f"postgresql://u@127.0.0.1:{free_port()}/db",
                         connect_url="http://connect.invalid:8083", relay_http_port=0,
                         supervise_interval_s=0.05, janitor_enabled=False)  # fmt: skip


# fmt: off
ANSWERS: dict[str, Handler] = {
    "409 rebalance": lambda r: httpx.Response(
        409, json={"error_code": 409, "message": "rebalance in progress"}
    ),
    "500": lambda r: httpx.Response(500, text="<html>oops</html>"),
    "garbage config": lambda r: httpx.Response(200, text="not json at all"),
    "config is a list": lambda r: httpx.Response(200, json=[1, 2]),
    "status garbage": lambda r: httpx.Response(
        200, json={"a": 1} if r.url.path.endswith("/config") else {"tasks": "nope"}
    ),
    "status tasks wrong": lambda r: httpx.Response(
        200,
        json={"a": "1"}
        if r.url.path.endswith("/config")
        else {"name": "x", "connector": {"state": "RUNNING"}, "tasks": [{"state": 5}]},
    ),
    "put refused 500": lambda r: httpx.Response(
        404 if r.method == "GET" else 500, json={"message": "no"}
    ),
    "empty 200": lambda r: httpx.Response(200),
    "redirect loop": lambda r: httpx.Response(307, headers={"Location": str(r.url)}),
}
# fmt: on


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_relay_survives_every_answer(name: str) -> None:
    s = _settings()
    # No waiting between rebalance retries here: the client gives up at once.
    client = ConnectClient(s.connect_url, transport=httpx.MockTransport(ANSWERS[name]),
                           rebalance_retries=())  # fmt: skip
    relay = Relay(s, connect=client)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if relay.report.message != "not yet observed" and relay.http_port:
                break
        await asyncio.sleep(0.3)  # several ticks
        assert not task.done(), task.exception()
        assert relay.report.health in (Health.UNHEALTHY, Health.DEGRADED, Health.STARTING)
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://127.0.0.1:{relay.http_port}/healthz")
        body = json.loads(r.text)
        assert body["health"] == relay.report.health.value
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_running_connector_with_postgres_down_is_not_healthy() -> None:
    """Connect says RUNNING, but the slot cannot be read: WAL may pile up unseen."""
    from relay.connector_config import render

    s = _settings()
    desired = render(s)

    def answer(r: httpx.Request) -> httpx.Response:
        if r.url.path.endswith("/config"):
            return httpx.Response(200, json=desired)
        return httpx.Response(200, json={"name": s.connector_name, "connector": {"state": "RUNNING"},
                                         "tasks": [{"id": 0, "state": "RUNNING"}]})  # fmt: skip

    client = ConnectClient(s.connect_url, transport=httpx.MockTransport(answer))
    relay = Relay(s, connect=client)
    try:
        report = await relay.tick()
    finally:
        await relay.aclose()
    assert report.health is Health.DEGRADED, report
    assert any("cannot read slot health from Postgres" in d for d in report.details), report
