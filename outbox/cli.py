"""Entry point of the ``outbox`` command."""

from __future__ import annotations

import typer

from outbox import db_cli, demo_cli, relay_cli, router_cli, stack_cli

app = typer.Typer(
    name="outbox",
    help="outbox-relay: teacher notifications from a Postgres outbox to the browser.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
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
    app()


if __name__ == "__main__":
    main()
