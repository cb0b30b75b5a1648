"""``outbox router run``, ``outbox token``, ``outbox tail`` and ``outbox dlq ...``."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from contracts.display import printable
from outbox.common import (
    LogFormat,
    LogFormatOpt,
    LogLevelOpt,
    fail,
    register_secrets,
    settings_error,
    setup_logging,
)
from router.errors import RouterError, StoreUnavailableError

router_app = typer.Typer(help="The WebSocket router (Kafka -> teachers' browsers).",
                         no_args_is_help=True)  # fmt: skip
dlq_app = typer.Typer(help="Inspect and re-publish dead-lettered records.", no_args_is_help=True)


def _settings() -> Any:
    from urllib.parse import urlsplit

    from router.settings import RouterSettings

    try:
        s = RouterSettings()
    except ValidationError as exc:
        raise settings_error("router", exc) from exc
    register_secrets(s.jwt_secret.get_secret_value() if s.jwt_secret else None,
                     urlsplit(s.redis_url).password)  # fmt: skip
    return s


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


@router_app.command("run")
def run(
    log_format: LogFormatOpt = LogFormat.human,
    log_level: LogLevelOpt = "INFO",
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Router processes sharing the port, one per core (default: OUTBOX_WORKERS, 1).",
        ),
    ] = None,
) -> None:
    """Run the router until SIGTERM/SIGINT (settings from OUTBOX_* variables).

    Needs OUTBOX_KAFKA_BOOTSTRAP, OUTBOX_REDIS_URL and OUTBOX_JWT_SECRET (or
    OUTBOX_JWT_PUBLIC_KEY with OUTBOX_JWT_ALGORITHMS=RS256). Serves ws://HOST:PORT/ws,
    the inbox page at /, and /healthz, /readyz, /metrics. With --workers N, N
    processes share the port (each a whole replica; /metrics per worker on
    OUTBOX_ADMIN_PORT + its index).
    """
    from router.app import Router

    setup_logging(log_format, log_level)
    # websockets logs every plain HTTP answer (/healthz, /metrics) as "rejected".
    logging.getLogger("websockets.server").setLevel(logging.WARNING)
    settings = _settings()
    n = workers if workers is not None else settings.workers
    if n > 1:
        from router.workers import run_workers

        if settings.router_port == 0:
            raise fail("--workers needs a fixed OUTBOX_ROUTER_PORT to share (not 0)", 2)
        args = ["-m", "outbox.cli", "router", "run", "--log-format", log_format.value,
                "--log-level", log_level, "--workers", "1"]  # fmt: skip
        raise typer.Exit(run_workers(n, args, admin_port=settings.admin_port))

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await Router(settings).run(stop)

    try:
        asyncio.run(main())
    except StoreUnavailableError as exc:
        # Said through logging, so it is JSON too under --log-format json.
        logging.getLogger("outbox.router").error("cannot start: %s", exc)
        raise typer.Exit(3) from exc
    except RouterError as exc:
        raise fail(exc) from exc


def token(
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher id (the token's sub).")],
    ttl: Annotated[
        int, typer.Option("--ttl", min=1, max=366 * 24 * 3600, help="Lifetime in seconds.")
    ] = 8 * 3600,
    private_key: Annotated[
        typer.FileText | None,
        typer.Option(
            "--private-key",
            help="PEM private key for RS256/ES256 (default: HS256 with OUTBOX_JWT_SECRET).",
        ),
    ] = None,
) -> None:
    """Mint a development token for a teacher with the configured key."""
    from router.auth import mint

    _check_teacher(teacher)
    s = _settings()
    if private_key is not None:
        key, alg = private_key.read(), s.jwt_algorithms[0]
    elif s.jwt_secret is not None and s.jwt_secret.get_secret_value():
        key, alg = s.jwt_secret.get_secret_value(), "HS256"
    else:
        raise fail("no key: set OUTBOX_JWT_SECRET or pass --private-key", 2)
    typer.echo(mint(key, teacher, ttl, algorithm=alg, audience=s.jwt_audience,
                    issuer=s.jwt_issuer, now=time.time()))  # fmt: skip


def _check_teacher(teacher: str) -> None:
    from contracts.rules import id_violations

    problems = id_violations("teacher_id", teacher, required=True)
    if problems:
        raise fail(f"--teacher {problems[0].message}", 2)


def tail(
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Mint a dev token for this teacher.")
    ] = None,
    token_: Annotated[str | None, typer.Option("--token", help="Use this token instead.")] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Resume after this position.")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="ws://host:port/ws (default: from OUTBOX_ROUTER_HOST and OUTBOX_ROUTER_PORT).",
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Exit after N notifications.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print raw frames.")] = False,
) -> None:
    """A terminal client: print a teacher's notifications live."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from contracts.protocol import AuthFrame, valid_position
    from router.auth import mint

    if resume is not None and not valid_position(resume):
        raise fail(f"--resume {resume[:40]!r} is not a position (two integers joined by '-', "
                   "as in a frame's position)", 2)  # fmt: skip
    if url is not None and not url.startswith(("ws://", "wss://")):
        raise fail(f"--url {url[:60]!r} is not a WebSocket URL; use ws://HOST:PORT/ws", 2)
    if teacher is not None:
        _check_teacher(teacher)
    s = _settings()
    if token_ is None:
        if teacher is None:
            raise fail("pass --teacher (mints a dev token) or --token", 2)
        if s.jwt_secret is None:
            raise fail("OUTBOX_JWT_SECRET is not set; pass --token", 2)
        token_ = mint(s.jwt_secret.get_secret_value(), teacher, 3600, audience=s.jwt_audience,
                      issuer=s.jwt_issuer, now=time.time())  # fmt: skip
    target = url or f"ws://{s.router_host}:{s.router_port}/ws"

    async def main() -> int:
        seen = 0
        try:
            async with connect(target) as ws:
                await ws.send(AuthFrame(token=token_, resume=resume).model_dump_json())
                async for raw in ws:
                    frame = json.loads(raw)
                    if as_json:
                        typer.echo(raw)
                    else:
                        _print_frame(frame)
                    if frame["type"] == "notification":
                        seen += 1
                        if count is not None and seen >= count:
                            return 0
        except ConnectionClosed as exc:
            rc = exc.rcvd
            typer.secho(f"closed: {rc.code if rc else '-'} {rc.reason if rc else ''}", err=True)
            return 1
        except OSError as exc:
            typer.secho(f"error: cannot reach {target} ({exc.strerror or exc}); is the router "
                        "running there?", err=True, fg=typer.colors.RED)  # fmt: skip
            return 3
        return 0

    raise typer.Exit(asyncio.run(main()))


def _print_frame(f: dict[str, Any]) -> None:
    t = f["type"]
    if t == "notification":
        n = f["notification"]
        flags = "".join(x for x, on in (("P", f["pending"]), ("R", f["replayed"])) if on)
        lat = ""
        if f.get("created_at"):
            ms = (time.time() - datetime.fromisoformat(f["created_at"]).timestamp()) * 1000
            lat = f" {ms:.0f}ms"
        typer.echo(f"{time.strftime('%H:%M:%S')} {n['priority'].upper():<9} {n['notification_type']:<40} "
                   f"{n['teacher_id']} pos={f['position']} {flags}{lat}")  # fmt: skip
    elif t == "replay_done":
        typer.echo(f"-- replay done: recovered={f['recovered']} replayed={f['replayed']} "
                   f"pending={f['pending']} position={f['position']}")  # fmt: skip
    else:
        typer.echo(json.dumps(f))


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many records.")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List dead-lettered records with their reason and source offset."""
    from router.dlq import read_dead_letters

    s = _settings()
    records = read_dead_letters(s.kafka_bootstrap, s.dlq_topic, limit=limit)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    if not records:
        typer.echo(f"no dead letters in {s.dlq_topic}")
    for r in records:
        # Anything can be in a dead letter's headers: shown escaped, never as terminal input.
        typer.echo(printable(f"{r.partition}:{r.offset}  {r.reason:<13} from {r.source}  "
                             f"{r.error[:100]}"))  # fmt: skip


@dlq_app.command("replay")
def dlq_replay(
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many records.")] = 1000,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be sent.")
    ] = False,
) -> None:
    """Re-publish dead letters to the notification topic.

    Run it after fixing their cause (for example adding a type to the catalog).
    Records that are still invalid go back to the dead-letter topic when the
    router reads them again; duplicates are dropped by the router.
    """
    from router.dlq import read_dead_letters, republish

    s = _settings()
    records = read_dead_letters(s.kafka_bootstrap, s.dlq_topic, limit=limit)
    if dry_run:
        typer.echo(f"would re-publish {len(records)} records to {s.topic}")
        return
    n = republish(s.kafka_bootstrap, s.topic, records)
    typer.echo(f"re-published {n} records to {s.topic}")
    sys.stdout.flush()
