"""``outbox connector ...``, ``outbox relay ...`` and ``outbox doctor``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from outbox.common import (
    JsonFlag,
    LogFormat,
    LogFormatOpt,
    LogLevelOpt,
    fail,
    register_secrets,
    settings_error,
    setup_logging,
    table,
)
from relay.errors import RelayError
from relay.secrets import is_secret_key
from relay.settings import RelaySettings

connector_app = typer.Typer(help="The Debezium connector, through the Kafka Connect REST API.",
                            no_args_is_help=True)  # fmt: skip
relay_app = typer.Typer(help="The relay daemon: supervises the connector, slot health, janitor.",
                        no_args_is_help=True)  # fmt: skip

T = TypeVar("T")


def _settings() -> RelaySettings:
    from relay.secrets import dsn_password

    try:
        s = RelaySettings()
    except ValidationError as exc:
        raise settings_error("relay", exc) from exc
    register_secrets(s.cdc_password.get_secret_value(), dsn_password(s.pg_dsn),
                     *(v for k, v in s.connector_overrides.items() if v and is_secret_key(k)))  # fmt: skip
    return s


def _run(make: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except RelayError as exc:
        raise fail(exc) from exc


def _client(s: RelaySettings) -> Any:
    from relay.connect_api import ConnectClient

    return ConnectClient(s.connect_url)


@connector_app.command()
def render(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json/--properties",
            help="JSON for the REST API, or key=value lines for a properties file.",
        ),
    ] = True,
    show_secrets: Annotated[bool, typer.Option("--show-secrets")] = False,
) -> None:
    """Print the connector config rendered from connect-config/connector.json and OUTBOX_*."""
    from relay.connector_config import render as do_render
    from relay.secrets import masked

    try:
        cfg = do_render(_settings())
    except RelayError as exc:
        raise fail(exc) from exc
    shown = cfg if show_secrets else masked(cfg)
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
    else:
        for key, value in shown.items():
            typer.echo(f"{key}={value}")


@connector_app.command()
def apply(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the diff, change nothing.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Return only once the connector and its tasks run.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds --wait waits before failing.")
    ] = 90.0,
) -> None:
    """Create or update the connector; no request when the live config already
    matches. With --wait, exit 0 only once it RUNS (1 if it fails or the time is up)."""
    from relay.apply import apply as do_apply
    from relay.apply import format_changes
    from relay.connector_config import render as do_render
    from relay.topics import ensure_topics

    s = _settings()

    async def go() -> None:
        desired = do_render(s)
        if not dry_run:
            for name in ensure_topics(s.kafka_bootstrap, s.topic, s.topic_partitions,
                                      topic_prefix=s.topic_prefix):  # fmt: skip
                typer.echo(f"created topic {name}")
        async with _client(s) as c:
            res = await do_apply(c, s.connector_name, desired, dry_run=dry_run)
            if not res.changed:
                typer.echo(f"connector {s.connector_name} is up to date; nothing sent")
            else:
                verb = "would create" if dry_run and res.created else "would update" if dry_run else (
                    "created" if res.created else "updated")  # fmt: skip
                typer.echo(f"{verb} connector {s.connector_name}:")
                typer.echo(format_changes(res))
            if wait and not dry_run:
                await _wait_running(c, s.connector_name, timeout)

    _run(go)


async def _wait_running(c: Any, name: str, limit_s: float) -> None:
    """Until the connector and every task are RUNNING; exit 1 on FAILED or timeout."""
    from relay.errors import ConnectorNotFoundError
    from relay.supervisor import shorten

    deadline = asyncio.get_running_loop().time() + limit_s
    state = "no status yet"
    while asyncio.get_running_loop().time() < deadline:
        try:
            st = await c.status(name)
        except ConnectorNotFoundError:  # just created: Connect has not assigned it yet
            await asyncio.sleep(0.5)
            continue
        parts = [("connector", st.state, st.trace)] + [(f"task {t.id}", t.state, t.trace)
                                                       for t in st.tasks]  # fmt: skip
        failed = [p for p in parts if p[1] == "FAILED"]
        if failed:
            raise fail(f"connector {name}: {failed[0][0]} FAILED: {shorten(failed[0][2], 1)}; "
                       "see `outbox connector status` and docs/operations.md", 1)  # fmt: skip
        if st.tasks and all(p[1] == "RUNNING" for p in parts):
            typer.echo(f"connector {name} and its {len(st.tasks)} task(s) are RUNNING")
            return
        state = ", ".join(f"{p[0]} {p[1]}" for p in parts) if st.tasks else f"{st.state}, no tasks"
        await asyncio.sleep(0.5)
    raise fail(f"connector {name} is not RUNNING after {limit_s:g} s ({state}); see "
               "`outbox connector status` and the Connect worker's log", 1)  # fmt: skip


@connector_app.command()
def status(as_json: JsonFlag = False) -> None:
    """The connector's and its tasks' states (and the trace of a failed one)."""
    from relay.supervisor import shorten

    s = _settings()

    async def go() -> Any:
        from relay.errors import ConnectorNotFoundError

        async with _client(s) as c:
            try:
                return await c.status(s.connector_name)
            except ConnectorNotFoundError:
                if await c.get_config(s.connector_name) is None:
                    raise
                raise fail(f"connector {s.connector_name} exists but Connect has not assigned it "
                           "yet (it was just created or updated); `outbox connector apply --wait` "
                           "waits until it runs", 1) from None  # fmt: skip

    st = _run(go)
    if as_json:
        typer.echo(json.dumps({"name": st.name, "state": st.state, "worker_id": st.worker_id,
                               "tasks": [t.__dict__ for t in st.tasks]}, indent=2))  # fmt: skip
        return
    rows = [["connector", st.state, st.worker_id or "", shorten(st.trace, 1)]]
    rows += [[f"task {t.id}", t.state, t.worker_id or "", shorten(t.trace, 1)] for t in st.tasks]
    typer.echo(table(["PART", "STATE", "WORKER", "TRACE"], rows))


def _simple(action: str, doc: str) -> None:
    def cmd() -> None:
        s = _settings()

        async def go() -> None:
            async with _client(s) as c:
                await getattr(c, action)(s.connector_name)

        _run(go)
        typer.echo(f"{action}: {s.connector_name} ok")

    cmd.__doc__ = doc
    connector_app.command(action)(cmd)


_simple("pause", "Pause the connector (the relay leaves it paused).")
_simple("resume", "Resume a paused or stopped connector.")
_simple("stop", "Stop the connector (tasks shut down, config kept).")
_simple("delete", "Delete the connector (its slot stays in Postgres).")


@connector_app.command()
def restart() -> None:
    """Restart the failed connector and tasks (includeTasks=true&onlyFailed=true)."""
    s = _settings()

    async def go() -> None:
        async with _client(s) as c:
            await c.restart(s.connector_name)

    _run(go)
    typer.echo(f"restart requested for the failed parts of {s.connector_name}")


@connector_app.command()
def offsets() -> None:
    """The connector's committed source offsets (the LSN it resumes from)."""
    s = _settings()

    async def go() -> Any:
        async with _client(s) as c:
            return await c.offsets(s.connector_name)

    typer.echo(json.dumps(_run(go), indent=2))


@relay_app.command("run")
def relay_run(log_format: LogFormatOpt = LogFormat.human, log_level: LogLevelOpt = "INFO") -> None:
    """Run the relay daemon until SIGTERM/SIGINT.

    Keeps the connector applied and running, watches the replication slot,
    deletes captured outbox rows, and serves /healthz (alive), /readyz (the
    pipeline is healthy), /status (JSON) and /metrics on OUTBOX_RELAY_HTTP_PORT.
    """
    from relay.daemon import Relay
    from relay.topics import ensure_topics

    setup_logging(log_format, log_level)
    s = _settings()

    async def go() -> None:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.to_thread(ensure_topics, s.kafka_bootstrap, s.topic, s.topic_partitions,
                                topic_prefix=s.topic_prefix)  # fmt: skip
        await Relay(s).run(stop)

    _run(go)


@relay_app.command("status")
def relay_status(
    as_json: JsonFlag = False,
    one_shot: Annotated[
        bool,
        typer.Option(
            "--one-shot", help="Observe once from here even if a relay daemon is running."
        ),
    ] = False,
) -> None:
    """Connector health, restarts, slot lag, backlog, heartbeat age.

    Asks the running relay daemon (OUTBOX_HTTP_HOST:OUTBOX_RELAY_HTTP_PORT) first:
    only it knows the restart history. Without one, observes once.
    """
    from relay.daemon import Relay
    from relay.supervisor import Memory, Policy, decide

    s = _settings()
    data = None if one_shot else _daemon_status(s)

    async def go() -> dict[str, Any]:
        relay = Relay(s)
        try:
            obs = await relay.observe()
            _, _, report = decide(relay.desired, obs, Memory(), Policy(), 0.0)
            relay.report = report
            out = relay.status_dict()
            out["connector"] = (
                obs.status.state if obs.status else ("missing" if obs.reachable else "unreachable")
            )
            out["source"] = "one-shot"
            if out["connector"] == "missing":  # decide() speaks for a daemon that would create it
                out["health"] = "unhealthy"
                out["message"] = (f"connector {s.connector_name} does not exist; `outbox connector "
                                  "apply` creates it (a running relay daemon does so itself)")  # fmt: skip
            details = out.get("details")
            details = details if isinstance(details, list) else []
            if relay.slot is None and relay.slot_error and not any(
                    relay.slot_error in str(d) for d in details):  # fmt: skip
                out["details"] = [*details, f"slot health: {relay.slot_error}"]
            return out
        finally:
            await relay.aclose()

    if data is None:
        data = _run(go)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        slot = data.get("slot") or {}
        rows = [
            ["health", data["health"]],
            ["message", data["message"]],
            ["source", data.get("source", "relay daemon")],
            ["connector", data.get("connector", "")],
            ["restarts", str(data.get("restarts", 0))],
            ["slot", f"{slot.get('slot_name', s.slot_name)} active={slot.get('active')}"],
            ["slot retained", f"{slot.get('retained_bytes', 0)} bytes"],
            ["slot lag", f"{slot.get('lag_bytes', 0)} bytes"],
            ["outbox backlog", f"{slot.get('backlog', 0)} rows"],
            ["heartbeat age", f"{slot.get('heartbeat_age_s')} s"],
        ]
        if data.get("last_failure"):
            rows.append(["last failure", data["last_failure"]])
        rows += [["problem", d] for d in data.get("details", [])]
        typer.echo(table(["WHAT", "VALUE"], rows))
    if data["health"] not in ("healthy", "paused", "stopped", "starting"):
        raise typer.Exit(1)


def _daemon_status(s: RelaySettings) -> dict[str, Any] | None:
    """The running daemon's /status, or None when none answers."""
    import httpx

    if not s.relay_http_port:
        return None
    try:
        r = httpx.get(f"http://{s.http_host}:{s.relay_http_port}/status", timeout=2)
        data = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(data, dict) or "health" not in data:
        return None
    data["source"] = f"relay daemon on {s.http_host}:{s.relay_http_port}"
    return data


def doctor(as_json: JsonFlag = False) -> None:
    """Preflight checks (Postgres, roles, publication, Connect, topic); exit 1 on any failure."""
    from relay.doctor import run_checks

    checks = _run(lambda: run_checks(_settings()))
    if as_json:
        typer.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        for c in checks:
            mark = (
                typer.style(" ok ", fg=typer.colors.GREEN)
                if c.ok
                else typer.style("FAIL", fg=typer.colors.RED)
            )
            typer.echo(f"[{mark}] {c.name}: {c.detail}")
            if not c.ok and c.fix:
                typer.echo(f"       fix: {c.fix}")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
