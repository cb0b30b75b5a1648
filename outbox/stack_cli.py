"""``outbox stack ...``: the embedded development stack."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

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
        help="Folder for data, logs and the state file [default: $OUTBOX_STACK_STATE_DIR "
        "or <tmp>/outbox-stack-<uid>].",
    ),
]


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


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
def up(state_dir: StateDir = None) -> None:
    """Start the four components on free loopback ports and wait until each is ready."""
    s = _settings(state_dir)
    typer.echo("starting broker, Kafka Connect, Postgres and Redis (Connect takes ~30 s)...")
    try:
        state = StackManager(s).up()
    except StackError as exc:
        raise _fail(exc) from exc
    for c in state.components:
        typer.echo(f"  {c.name:<9} pid {c.pid:<7} {c.url}")
    typer.echo(f"state: {state.state_dir}")
    typer.echo('next: eval "$(outbox stack env)"; outbox db migrate')


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop everything the stack started (by pid); safe to run twice."""
    stopped = StackManager(_settings(state_dir)).down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "no stack was running")


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
        typer.echo(f"{'COMPONENT':<10} {'PID':<8} {'PORT':<6} {'HEALTH':<8} URL")
        for c in state.components:
            mark = "ok" if h[c.name] else "DOWN"
            typer.echo(f"{c.name:<10} {c.pid:<8} {c.port:<6} {mark:<8} {c.url}")
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
    lines: Annotated[int, typer.Option("-n", "--lines", help="Lines from the end.")] = 50,
    state_dir: StateDir = None,
) -> None:
    """Show the last lines of a component's log."""
    state = _load(state_dir)
    names = [c.name for c in state.components]
    if component is not None and component not in names:
        typer.secho(f"error: no component {component!r}; one of {', '.join(names)}", err=True)
        raise typer.Exit(2)
    for c in state.components:
        if component in (None, c.name):
            typer.secho(f"== {c.name} ({c.log}) ==", bold=True)
            sys.stdout.write(procs.tail(Path(c.log), lines) + "\n")
