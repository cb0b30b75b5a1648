"""A typed async client for the Kafka Connect REST API (httpx).

Connect's error bodies (``{"error_code": .., "message": ..}``) become
:class:`ConnectApiError`; no answer at all becomes :class:`ConnectUnreachableError`.
Tests pass ``transport=httpx.MockTransport(...)`` for pure logic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from relay.errors import ConnectApiError, ConnectorNotFoundError, ConnectUnreachableError


@dataclass(frozen=True)
class TaskStatus:
    id: int
    state: str
    worker_id: str | None = None
    trace: str | None = None


@dataclass(frozen=True)
class ConnectorStatus:
    name: str
    state: str  # RUNNING, PAUSED, STOPPED, FAILED, UNASSIGNED, RESTARTING
    worker_id: str | None
    tasks: list[TaskStatus] = field(default_factory=list)
    trace: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConnectorStatus:
        c = d.get("connector", {})
        tasks = [TaskStatus(int(t["id"]), t["state"], t.get("worker_id"), t.get("trace"))
                 for t in d.get("tasks", [])]  # fmt: skip
        return cls(d["name"], c.get("state", "UNKNOWN"), c.get("worker_id"), tasks, c.get("trace"))


class ConnectClient:
    def __init__(self, url: str, *, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 30.0,
                 rebalance_retries: tuple[float, ...] = (0.5, 1.0, 2.0),
                 observe: Callable[[str, float], None] | None = None) -> None:  # fmt: skip
        # Any worker of the cluster answers for all of it (a worker forwards what
        # only the leader may do), so several URLs, comma-separated, are tried in
        # turn: the one that answered last first.
        self.urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()] or [url]
        self._turn = 0
        # Called with (HTTP method, seconds) after each request, failed or not.
        self._observe = observe
        self.rebalance_retries = rebalance_retries
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)

    @property
    def url(self) -> str:
        """The worker asked first (the one that answered last)."""
        return self.urls[self._turn]

    async def _send(self, method: str, path: str, *, json: Any, params: dict[str, str] | None,
                    ) -> httpx.Response:  # fmt: skip
        """One request to the first worker that answers at all."""
        errors: list[str] = []
        for i in range(len(self.urls)):
            turn = (self._turn + i) % len(self.urls)
            start = time.perf_counter()
            try:
                r = await self._http.request(method, self.urls[turn] + path, json=json,
                                             params=params)  # fmt: skip
            except httpx.TransportError as exc:
                errors.append(f"{self.urls[turn]}: {str(exc) or type(exc).__name__}")
                continue
            finally:
                if self._observe is not None:
                    self._observe(method, time.perf_counter() - start)
            self._turn = turn
            return r
        raise ConnectUnreachableError(",".join(self.urls), "; ".join(errors))

    async def __aenter__(self) -> ConnectClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, *, connector: str | None = None,
                       json: Any = None, params: dict[str, str] | None = None) -> Any:  # fmt: skip
        # A worker answers 409 (or 500 "a rebalance is expected") while the group
        # rebalances, without doing anything: asking again shortly is safe.
        for delay in (*self.rebalance_retries, None):
            r = await self._send(method, path, json=json, params=params)
            rebalancing = r.status_code == 409 or (
                r.status_code == 500 and b"rebalance" in r.content
            )
            if not rebalancing or delay is None:
                break
            await asyncio.sleep(delay)
        if r.status_code >= 400:
            try:
                body = r.json()
                message = str(body.get("message") or body)
            except ValueError:
                message = r.text[:500] or r.reason_phrase
            if r.status_code == 404 and connector is not None:
                raise ConnectorNotFoundError(404, message, connector=connector)
            raise ConnectApiError(r.status_code, message, connector=connector)
        if r.status_code == 204 or not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            return r.text

    async def version(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._request("GET", "/")
        return data

    async def connector_plugins(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = await self._request("GET", "/connector-plugins")
        return data

    async def connectors(self) -> list[str]:
        data: list[str] = await self._request("GET", "/connectors")
        return data

    async def get_config(self, name: str) -> dict[str, str] | None:
        """The live config, or ``None`` when the connector does not exist.

        Raises:
            ConnectUnreachableError, ConnectApiError: as every call here; an
                answer that is not a config object is a ConnectApiError too.
        """
        try:
            data = await self._request("GET", f"/connectors/{name}/config", connector=name)
        except ConnectorNotFoundError:
            return None
        if not isinstance(data, dict):
            raise ConnectApiError(200, f"expected a config object, got {str(data)[:200]!r}",
                                  connector=name)  # fmt: skip
        return {str(k): str(v) for k, v in data.items()}

    async def put_config(self, name: str, config: dict[str, str]) -> dict[str, Any]:
        """Create or update; Connect validates the config (and the DB connection) first."""
        data: dict[str, Any] = await self._request("PUT", f"/connectors/{name}/config",
                                                   connector=name, json=config)  # fmt: skip
        return data

    async def status(self, name: str) -> ConnectorStatus:
        """Raises ConnectApiError for an answer that is not a connector status."""
        data = await self._request("GET", f"/connectors/{name}/status", connector=name)
        try:
            return ConnectorStatus.from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConnectApiError(200, f"not a connector status ({type(exc).__name__}): "
                                  f"{str(data)[:200]!r}", connector=name) from exc  # fmt: skip

    async def restart(
        self, name: str, *, include_tasks: bool = True, only_failed: bool = True
    ) -> None:
        await self._request("POST", f"/connectors/{name}/restart", connector=name,
                            params={"includeTasks": str(include_tasks).lower(),
                                    "onlyFailed": str(only_failed).lower()})  # fmt: skip

    async def pause(self, name: str) -> None:
        await self._request("PUT", f"/connectors/{name}/pause", connector=name)

    async def resume(self, name: str) -> None:
        await self._request("PUT", f"/connectors/{name}/resume", connector=name)

    async def stop(self, name: str) -> None:
        await self._request("PUT", f"/connectors/{name}/stop", connector=name)

    async def delete(self, name: str) -> None:
        await self._request("DELETE", f"/connectors/{name}", connector=name)

    async def offsets(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = await self._request(
            "GET", f"/connectors/{name}/offsets", connector=name
        )
        return data
