"""Entry point of the ``outbox`` command."""

from __future__ import annotations

import typer

from outbox import db_cli, stack_cli

app = typer.Typer(
    name="outbox",
    help="outbox-relay: teacher notifications from a Postgres outbox to the browser.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_cli.app, name="stack")
app.add_typer(db_cli.app, name="db")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
