"""The relay daemon: observe, decide, act; slot health; janitor; metrics.

``Relay.run()`` owns one TaskGroup with the supervision loop, the janitor loop
and the metrics/health HTTP server. SIGTERM/SIGINT set the stop event; each
loop finishes its step and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from urllib.parse import urlsplit

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from relay.connect_api import ConnectClient, ConnectorStatus
from relay.connector_config import render
from relay.errors import (
    ConnectApiError,
    ConnectError,
    ConnectorNotFoundError,
    ConnectUnreachableError,
)
from relay.janitor import Janitor
from relay.metrics import CONNECTOR_STATES, RelayMetrics
from relay.settings import RelaySettings
from relay.slot_health import (
    EVENTS_BACKLOG_SQL,
    NO_SLOT_SQL,
    SLOT_SQL,
    Level,
    SlotAssessment,
    SlotStats,
    assess,
    from_row,
)
from relay.supervisor import (
    Create,
    Health,
    Memory,
    Observation,
    Policy,
    Reapply,
    Report,
    RestartFailed,
    decide,
    first_line,
    task_moves,
)

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, settings: RelaySettings, *, connect: ConnectClient | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.s = settings
        self.desired = render(settings)
        self.connect = connect or ConnectClient(
            settings.connect_url,
            observe=lambda method, s: self.metrics.connect_call.labels(method).observe(s),
        )
        self.clock = clock
        self.metrics = RelayMetrics()
        self.policy = Policy(
            settings.restart_backoff_initial_s,
            settings.restart_backoff_max_s,
            settings.max_restarts,
            settings.restart_stable_after_s,
        )
        self.memory = Memory()
        self.report = Report(Health.STARTING, "not yet observed")
        self.slot: SlotStats | None = None
        self.janitor = Janitor(settings.slot_name, batch=settings.janitor_batch)
        self.events_seen: set[str] = set()  # topics with a backlog series set
        self.slot_error: str | None = None  # why the last slot read failed
        self._pg: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._last_crash = ""
        self.connector_state = "not yet observed"
        self.http_port: int | None = None
        self.last_tick: float | None = None  # monotonic time of the last supervision tick
        self.task_workers: dict[int, str] = {}  # task id -> the worker it last ran on

    # -- observation ---------------------------------------------------------

    async def _db(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._pg is None or self._pg.closed:
            self._pg = await psycopg.AsyncConnection.connect(
                self.s.pg_dsn, autocommit=True, connect_timeout=5
            )
        return self._pg

    async def _drop_db(self) -> None:
        """Forget the connection after a failure (the next use opens a new one)."""
        pg, self._pg = self._pg, None
        if pg is not None:
            with contextlib.suppress(Exception):
                await pg.close()

    def _silent_db(self) -> str:
        return (f"Postgres answered nothing in {self.s.pg_timeout_s:g} s (OUTBOX_PG_TIMEOUT_S); "
                "is it hung, or the network to it cut?")  # fmt: skip

    async def slot_stats(self) -> SlotStats | None:
        try:
            async with asyncio.timeout(self.s.pg_timeout_s):
                db = await self._db()
                row = await (await db.execute(SLOT_SQL, (self.s.slot_name,))).fetchone()
                fallback = None if row else await (await db.execute(NO_SLOT_SQL)).fetchone()
                rows = await (await db.execute(EVENTS_BACKLOG_SQL)).fetchall()
            waiting = {str(r[0]): int(str(r[1])) for r in rows}
            for topic in set(waiting) | set(self.events_seen):
                self.metrics.events_backlog.labels(topic).set(waiting.get(topic, 0))
            self.events_seen = set(waiting) | self.events_seen
            return from_row(self.s.slot_name, row, fallback)
        except TimeoutError:
            why = self._silent_db()
        except psycopg.Error as exc:
            why = first_line(str(exc))
            if isinstance(exc, psycopg.errors.UndefinedTable):
                why += "; is the database migrated? run `outbox db migrate`"
        self.slot_error = why
        log.warning("cannot read slot health: %s", why)
        await self._drop_db()
        return None

    async def observe(self) -> Observation:
        self.slot = await self.slot_stats()
        assessment = (assess(self.slot, warn_bytes=self.s.slot_warn_bytes, critical_bytes=self.s.slot_critical_bytes,
                             heartbeat_warn_s=self.s.heartbeat_warn_s) if self.slot else None)  # fmt: skip
        if self.slot is None:
            # Not knowing the slot is not "healthy": WAL may be piling up unseen.
            assessment = SlotAssessment(Level.CRITICAL, [f"cannot read slot health from Postgres: "
                                                         f"{self.slot_error or 'unknown error'}"])  # fmt: skip
        name = self.s.connector_name
        try:
            live = await self.connect.get_config(name)
            status: ConnectorStatus | None = None
            if live is not None:
                status = await self.connect.status(name)
        except ConnectUnreachableError as exc:
            return Observation(False, slot=assessment, unreachable_reason=exc.reason)
        except ConnectorNotFoundError:
            return Observation(True, None, None, assessment)  # deleted between the two calls
        except ConnectApiError as exc:
            return Observation(True, slot=assessment, api_error=str(exc))
        return Observation(True, live, status, assessment)

    # -- one step -----------------------------------------------------------

    async def tick(self) -> Report:
        obs = await self.observe()
        actions, self.memory, report = decide(
            self.desired, obs, self.memory, self.policy, self.clock()
        )
        for action in actions:
            try:
                await self._execute(action)
            except ConnectError as exc:
                report = Report(
                    Health.DEGRADED, f"{type(action).__name__} failed: {exc}", report.details
                )
        if report.health != self.report.health or report.message != self.report.message:
            level = (
                logging.INFO
                if report.health in (Health.HEALTHY, Health.STARTING)
                else logging.WARNING
            )
            log.log(level, "%s: %s%s", report.health, report.message,
                    "".join(f"\n  {d}" for d in report.details))  # fmt: skip
        self.report = report
        self.task_workers, moves = task_moves(self.task_workers, obs.status)
        for task, src, dst in moves:
            log.warning("connector %s task %d moved from worker %s to %s (a worker left or the "
                        "Connect group rebalanced)", self.s.connector_name, task, src, dst)  # fmt: skip
            self.metrics.task_moves.inc()
        self._update_metrics(obs)
        return report

    async def _execute(self, action: Create | Reapply | RestartFailed) -> None:
        name = self.s.connector_name
        if isinstance(action, Create):
            log.info("creating connector %s", name)
            await self.connect.put_config(name, action.config)
            self.metrics.applies.inc()
        elif isinstance(action, Reapply):
            log.warning(
                "connector %s config drifted (%s); re-applying",
                name,
                ", ".join(action.changed_keys),
            )
            await self.connect.put_config(name, action.config)
            self.metrics.applies.inc()
        else:
            log.warning("restarting failed parts of %s (tasks %s)", name, action.task_ids)
            await self.connect.restart(name, include_tasks=True, only_failed=True)
            self.metrics.restarts.inc()

    def _update_metrics(self, obs: Observation) -> None:
        m = self.metrics
        m.connect_up.set(1 if obs.reachable else 0)
        state = (
            obs.status.state
            if obs.status
            else ("MISSING" if obs.reachable and obs.live_config is None else None)
        )
        self.connector_state = state or ("unreachable" if not obs.reachable else "unknown")
        for s in CONNECTOR_STATES:
            m.connector_state.labels(s).set(1 if s == state else 0)
        counts: dict[str, int] = {}
        for t in obs.status.tasks if obs.status else []:
            counts[t.state] = counts.get(t.state, 0) + 1
        for s in CONNECTOR_STATES:
            m.tasks.labels(s).set(counts.get(s, 0))
        if self.slot:
            m.slot_retained.set(self.slot.retained_bytes)
            m.slot_lag.set(self.slot.lag_bytes)
            m.slot_active.set(1 if self.slot.active else 0)
            m.backlog.set(self.slot.backlog)
            if self.slot.heartbeat_age_s is not None:
                m.heartbeat_age.set(self.slot.heartbeat_age_s)
        m.healthy.set(1 if self.report.health is Health.HEALTHY else 0)
        m.gave_up.set(1 if self.memory.gave_up else 0)

    def status_dict(self) -> dict[str, object]:
        return {"health": self.report.health.value, "message": self.report.message, "details": self.report.details,
                "connector": self.connector_state,
                "restarts": self.memory.total_restarts, "gave_up": self.memory.gave_up,
                "last_failure": self.memory.last_failure or None, "slot": asdict(self.slot) if self.slot else None,
                "janitor_deleted": self.janitor.deleted_total}  # fmt: skip

    async def aclose(self) -> None:
        await self.connect.aclose()
        if self._pg is not None:
            await self._pg.close()
            self._pg = None

    # -- loops ----------------------------------------------------------------

    async def _safe_tick(self) -> Report:
        """A tick that cannot end the daemon: an error nobody foresaw is logged
        (once per distinct error) and reported."""
        try:
            return await self.tick()
        except Exception as exc:
            what = f"{type(exc).__name__}: {str(exc)[:300]}"
            if what != self._last_crash:
                log.exception("supervision step failed; retrying (%s)", what)
                self._last_crash = what
            self.report = Report(Health.UNHEALTHY, f"supervision step failed: {what}")
            self.metrics.healthy.set(0)
            return self.report

    async def _supervise(self, stop: asyncio.Event) -> None:
        interval = self.s.supervise_interval_s
        while not stop.is_set():
            report = await self._safe_tick()
            self.last_tick = time.monotonic()
            # Back off while Connect is unreachable; poll normally otherwise.
            interval = (
                min(interval * 2, 60.0)
                if report.health is Health.UNHEALTHY
                else self.s.supervise_interval_s
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def _janitor(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with asyncio.timeout(self.s.pg_timeout_s):
                    n = await self.janitor.tick(await self._db())
                self.metrics.janitor_deleted.inc(n)
            except TimeoutError:
                log.warning("janitor skipped a round: %s", self._silent_db())
                await self._drop_db()
            except psycopg.Error as exc:
                log.warning("janitor skipped a round: %s", str(exc).strip())
                await self._drop_db()
            except Exception:
                log.exception("janitor round failed; trying again next round")
                await self._drop_db()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.s.janitor_interval_s)

    def alive(self, now: float) -> bool:
        """Liveness: the supervision loop has ticked recently (a dependency being
        down is not a reason to restart the relay)."""
        if self.last_tick is None:
            return True  # starting
        return now - self.last_tick <= max(120.0, 4 * self.s.supervise_interval_s)

    def http_answer(self, path: str, now: float) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of ``path`` (pure but for the
        metrics registry):

        * ``/healthz`` liveness: 200 while the loop runs, whatever the pipeline's health;
        * ``/readyz`` readiness: 200 only while the pipeline is healthy (503 when
          paused, stopped, degraded, unhealthy or still starting), body says why;
        * ``/status`` the same JSON, always 200; ``/metrics`` Prometheus.
        """
        status_json = json.dumps(self.status_dict()).encode()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
        if path == "/healthz":
            return (200 if self.alive(now) else 503), "application/json", status_json
        if path == "/readyz":
            ok = self.report.health is Health.HEALTHY
            return (200 if ok else 503), "application/json", status_json
        if path == "/status":
            return 200, "application/json", status_json
        return 404, "text/plain", b"not found; try /healthz, /readyz, /status or /metrics\n"

    async def _process_request(self, _conn: ServerConnection, request: Request) -> Response:
        code, ctype, body = self.http_answer(urlsplit(request.path).path, time.monotonic())
        status = http.HTTPStatus(code)
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store")])  # fmt: skip
        return Response(status.value, status.phrase, headers, body)

    async def run(self, stop: asyncio.Event) -> None:
        # websockets' HTTP/1.1 server (the router's too) answers every request in
        # process_request; no WebSocket is ever opened.
        server = await serve(_no_websocket, self.s.http_host, self.s.relay_http_port,
                             process_request=self._process_request, logger=_http_log)  # fmt: skip
        self.http_port = int(next(iter(server.sockets)).getsockname()[1])
        log.info("relay for connector %s; metrics on http://%s:%d/metrics", self.s.connector_name,
                 self.s.http_host, self.http_port)  # fmt: skip
        try:
            async with server, asyncio.TaskGroup() as tg:
                tg.create_task(self._supervise(stop), name="supervise")
                if self.s.janitor_enabled:
                    tg.create_task(self._janitor(stop), name="janitor")
                await stop.wait()
        finally:
            await self.aclose()
            log.info("relay stopped")


async def _no_websocket(ws: ServerConnection) -> None:
    await ws.close(1008, "this is the relay's admin port; no WebSocket here")


_http_log = logging.getLogger("relay.http")
_http_log.setLevel(logging.WARNING)  # no line per /metrics scrape
