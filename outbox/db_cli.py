"""``outbox db ...``: migrations of the outbox schema."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from contracts.catalog import catalog_sql
from contracts.events import topics_sql
from contracts.limits import limits_sql
from outbox.common import JsonFlag, fail, register_secrets, table
from relay import migrations
from relay.errors import RelayError
from relay.resources import data_dir
from relay.settings import RelaySettings

app = typer.Typer(help="Migrate the outbox schema (tables, notify_teacher(), roles).",
                  no_args_is_help=True)  # fmt: skip

DsnOpt = Annotated[
    str | None, typer.Option("--dsn", help="Postgres DSN (default: $OUTBOX_PG_DSN).")
]


def _dsn(dsn: str | None) -> str:
    from relay.secrets import dsn_password

    value = dsn or RelaySettings().pg_dsn
    register_secrets(dsn_password(value))
    if not value:
        raise fail("no database given: pass --dsn or set OUTBOX_PG_DSN "
                   '(eval "$(outbox stack env)" for the embedded stack)', 2)  # fmt: skip
    return value


@app.command()
def migrate(dsn: DsnOpt = None) -> None:
    """Apply pending migrations, each in its own transaction (idempotent); with
    OUTBOX_CDC_PASSWORD(_FILE) or OUTBOX_RELAY_DB_PASSWORD(_FILE) set, also set the
    CDC and relay roles' passwords (stored as SCRAM verifiers, never sent in clear)."""
    try:
        done = migrations.migrate(_dsn(dsn), data_dir("sql"))
    except RelayError as exc:
        raise fail(exc) from exc
    if not done:
        typer.echo("database is up to date; nothing to apply")
    for m in done:
        typer.echo(f"applied {m.path.name}")
    s = RelaySettings()
    for role, secret, source in ((s.cdc_user, s.cdc_password, "OUTBOX_CDC_PASSWORD"),
                                 (s.relay_db_user, s.relay_db_password,
                                  "OUTBOX_RELAY_DB_PASSWORD")):  # fmt: skip
        if secret.get_secret_value():
            register_secrets(secret.get_secret_value())
            try:
                migrations.set_role_password(_dsn(dsn), role, secret.get_secret_value())
            except RelayError as exc:
                raise fail(exc) from exc
            typer.echo(f"set the password of {role} from {source}(_FILE)")


@app.command()
def status(dsn: DsnOpt = None, as_json: JsonFlag = False) -> None:
    """Show applied and pending migrations; exit 1 when any is pending."""
    try:
        st = migrations.status(_dsn(dsn), data_dir("sql"))
    except RelayError as exc:
        raise fail(exc) from exc
    if as_json:
        typer.echo(json.dumps([{"version": s.migration.version, "file": s.migration.path.name,
                                "state": s.state} for s in st], indent=2))  # fmt: skip
    else:
        typer.echo(table(["VERSION", "FILE", "STATE"],
                         [[s.migration.version, s.migration.path.name, s.state] for s in st]))  # fmt: skip
    if any(s.state != "applied" for s in st):
        raise typer.Exit(1)


GENERATED = {"R__catalog.sql": catalog_sql, "R__limits.sql": limits_sql,
             "R__event_topics.sql": topics_sql}  # fmt: skip


@app.command("generate")
def generate_cmd(
    write: Annotated[bool, typer.Option("--write", help="Write the files into sql/.")] = False,
) -> None:
    """Print (or --write) the SQL generated from contracts: the catalog table's
    rows (sql/R__catalog.sql), every limit (sql/R__limits.sql) and the registry of
    domain-event topics (sql/R__event_topics.sql)."""
    for name, make in GENERATED.items():
        text = make()
        if write:
            path = data_dir("sql") / name
            path.write_text(text)
            typer.echo(f"wrote {path}")
        else:
            typer.echo(f"-- {name}\n{text}", nl=False)


@app.command("catalog-sql")
def catalog_sql_cmd(
    write: Annotated[bool, typer.Option("--write", help="Write sql/R__catalog.sql.")] = False,
) -> None:
    """Print (or --write) the SQL that syncs the catalog table with contracts/catalog.py."""
    text = catalog_sql()
    if write:
        path = data_dir("sql") / "R__catalog.sql"
        path.write_text(text)
        typer.echo(f"wrote {path}")
    else:
        typer.echo(text, nl=False)
