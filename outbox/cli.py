"""Entry point of the ``outbox`` command.

Exit codes: 0 success, 1 failure, 2 usage or configuration, 3 a dependency is
unreachable (see :mod:`outbox.errors`). ``--debug`` (or ``OUTBOX_DEBUG=1``)
shows the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from outbox import common, db_cli, demo_cli, relay_cli, router_cli, stack_cli
from outbox.common import one_line, quiet_one_shot, report_error, scrub

app = typer.Typer(
    name="outbox",
    help="outbox-relay: teacher notifications from a Postgres outbox to the browser.\n\n"
    "Exit codes: 0 ok, 1 failure, 2 usage or configuration, 3 a dependency unreachable.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version() -> str:
    try:
        return version("outbox-relay")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"outbox {_version()}")
        raise typer.Exit


@app.callback()
def _root(
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    _debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an unexpected error.")
    ] = False,
) -> None:
    """outbox-relay: teacher notifications from a Postgres outbox to the browser."""


app.add_typer(stack_cli.app, name="stack")
app.add_typer(db_cli.app, name="db")
app.add_typer(router_cli.router_app, name="router")
app.add_typer(router_cli.dlq_app, name="dlq")
app.add_typer(relay_cli.connector_app, name="connector")
app.add_typer(relay_cli.relay_app, name="relay")
app.command()(relay_cli.doctor)
app.command()(demo_cli.demo)
app.command()(router_cli.token)
app.command()(router_cli.tail)


def main() -> None:
    """Run the CLI; an expected failure is one line and an exit code, never a traceback."""
    debug = "--debug" in sys.argv[1:] or os.environ.get("OUTBOX_DEBUG") == "1"
    common.JSON_ERRORS = "--json" in sys.argv[1:]
    quiet_one_shot(debug)
    try:
        app(prog_name="outbox")
    except Exception as exc:
        if debug:
            raise
        from outbox.errors import classify

        line, code = classify(exc)
        report_error(one_line(scrub(line)), code)
        sys.exit(code)


if __name__ == "__main__":
    main()
