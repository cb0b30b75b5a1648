"""``outbox stack ...``: the embedded development stack."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from outbox.common import fail
from stack import artifacts, procs
from stack.errors import StackError
from stack.manager import StackManager, health
from stack.settings import StackSettings
from stack.state import StackState, load

app = typer.Typer(
    help="Run the embedded real stack (Postgres, Redis, broker, Kafka Connect + Debezium).",
    no_args_is_help=True,
)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Folder for data, logs and the state file; the same for every stack command "
        "(default: $OUTBOX_STACK_STATE_DIR, else <tmp>/outbox-stack-<uid>).",
    ),
]


def _fail(exc: Exception) -> typer.Exit:
    return fail(exc)


def _settings(state_dir: Path | None) -> StackSettings:
    s = StackSettings()
    if state_dir is not None:
        s.state_dir = state_dir
    return s


def _load(state_dir: Path | None) -> StackState:
    try:
        return load(_settings(state_dir).state_dir.resolve())
    except StackError as exc:
        raise _fail(exc) from exc


@app.command()
def install() -> None:
    """Fetch and lay out the stack artifacts (broker binary, Connect + Debezium jars)."""
    s = StackSettings()
    try:
        did = artifacts.install(s.cache_dir, s.jetty_dir)
    except StackError as exc:
        raise _fail(exc) from exc
    if did:
        typer.echo(f"stack artifacts laid out in {s.cache_dir}")
    else:
        typer.echo(f"stack artifacts already in place in {s.cache_dir}; nothing to do")


@app.command()
def up(
    state_dir: StateDir = None,
    redis: Annotated[
        str, typer.Option("--redis", help="single: one Redis; cluster: a Redis Cluster of 3 "
                          "primaries and their replicas (sets OUTBOX_REDIS_CLUSTER in `stack env`).")
    ] = "single",
    redis_replicas: Annotated[
        int, typer.Option("--redis-replicas", min=1, max=3, help="With --redis cluster: replicas "
                          "per primary. 2 leave a promoted replica one of its own, which "
                          "OUTBOX_REDIS_WAIT_REPLICAS=1 needs to go on after a failover.")
    ] = 1,
    connect_workers: Annotated[
        int, typer.Option("--connect-workers", min=1, max=4, help="Kafka Connect workers in one "
                          "group: 2 or more make a Connect cluster (the task moves when one dies).")
    ] = 1,
) -> None:  # fmt: skip
    """Start the four components on free loopback ports and wait until each is ready."""
    if redis not in ("single", "cluster"):
        raise typer.BadParameter(f"must be single or cluster, not {redis!r}", param_hint="--redis")
    s = _settings(state_dir)
    s.redis = "cluster" if redis == "cluster" else "single"
    if redis_replicas != 1 and s.redis != "cluster":
        raise typer.BadParameter("only with --redis cluster", param_hint="--redis-replicas")
    s.redis_replicas = redis_replicas
    s.connect_workers = connect_workers
    typer.echo("starting broker, Kafka Connect, Postgres and Redis (Connect takes ~30 s)...")
    try:
        state = StackManager(s, progress=lambda line: typer.echo(f"  {line}")).up()
    except StackError as exc:
        raise _fail(exc) from exc
    except (KeyboardInterrupt, SystemExit):
        typer.echo("interrupted: stopped what had started; nothing is left running", err=True)
        raise
    for c in state.components:
        typer.echo(f"  {c.name:<15} pid {c.pid:<7} {c.url}")
    typer.echo(f"state: {state.state_dir}")
    typer.echo('next: eval "$(outbox stack env)"; outbox db migrate')


@app.command()
def down(
    state_dir: StateDir = None,
    purge: Annotated[bool, typer.Option("--purge", help="Delete the logs too.")] = False,
) -> None:
    """Stop everything the stack started (by pid) and delete its data; safe to
    run twice. The logs stay (`outbox stack logs` reads them) unless --purge."""
    s = _settings(state_dir)
    stopped = StackManager(s).down(keep_logs=not purge)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no stack was running")
    if not purge and any(s.state_dir.resolve().glob("*.log")):
        typer.echo(f"logs kept in {s.state_dir.resolve()} (--purge deletes them)")


@app.command()
def status(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each component, its pid, port and health."""
    state = _load(state_dir)
    h = health(state)
    if as_json:
        rows = [c.model_dump() | {"healthy": h[c.name]} for c in state.components]
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(f"{'COMPONENT':<15} {'PID':<8} {'PORT':<6} {'HEALTH':<8} URL")
        for c in state.components:
            mark = "ok" if h[c.name] else "DOWN"
            typer.echo(f"{c.name:<15} {c.pid:<8} {c.port:<6} {mark:<8} {c.url}")
    if not all(h.values()):
        raise typer.Exit(1)


@app.command()
def env(state_dir: StateDir = None) -> None:
    """Print `export` lines for the other commands: eval "$(outbox stack env)"."""
    state = _load(state_dir)
    for k, v in state.env().items():
        typer.echo(f"export {k}={shlex.quote(v)}")


@app.command()
def logs(
    component: Annotated[
        str | None, typer.Argument(help="postgres, redis, broker or connect; all if omitted.")
    ] = None,
    lines: Annotated[
        int,
        typer.Option(
            "-n", "--lines", min=0, help="Lines from the end (0: none, with -f only new ones)."
        ),
    ] = 50,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Show the last lines of a component's log (also after `stack down`)."""
    root = _settings(state_dir).state_dir.resolve()
    try:
        found = {c.name: Path(c.log) for c in load(root).components}
    except StackError:  # stopped: its logs may still be there
        found = {p.stem: p for p in sorted(root.glob("*.log"))}
    if not found:
        raise fail(f"no stack logs in {root}; start one with `outbox stack up`", 1)
    if component is not None and component not in found:
        raise fail(f"no component {component!r}; one of {', '.join(found)}", 2)
    chosen = {n: p for n, p in found.items() if component in (None, n)}
    for name, path in chosen.items():
        if not follow or len(chosen) > 1:
            typer.secho(f"== {name} ({path}) ==", bold=True)
        if lines:
            sys.stdout.write(procs.tail(path, lines) + "\n")
    if follow:
        _follow(chosen)


def _follow(paths: dict[str, Path]) -> None:
    """Print lines as they are appended, prefixed by the component when several."""
    import time

    offsets = {n: (p.stat().st_size if p.exists() else 0) for n, p in paths.items()}
    try:
        while True:
            for name, path in paths.items():
                try:
                    with path.open("rb") as f:
                        f.seek(offsets[name])
                        chunk = f.read()
                except OSError:
                    continue
                if chunk:
                    offsets[name] += len(chunk)
                    prefix = f"{name}: " if len(paths) > 1 else ""
                    for line in chunk.decode(errors="replace").splitlines():
                        sys.stdout.write(prefix + line + "\n")
                    sys.stdout.flush()
            time.sleep(0.3)
    except KeyboardInterrupt:
        return
