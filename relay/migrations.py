"""Apply the numbered migrations in ``sql/`` (and the repeatable ``R__*.sql``).

Versioned files (``001_name.sql``) run once each, in order, each in its own
transaction, and are recorded with a checksum; editing one after it was applied
is an error. Repeatable files run again whenever their content changes. A
session advisory lock keeps two runners from racing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from relay.errors import DatabaseUnavailableError, MigrationError

_VERSIONED = re.compile(r"^(\d+)_(.+)\.sql$")
_LOCK_KEY = 0x6F7574626F78  # "outbox"

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS outbox;
CREATE TABLE IF NOT EXISTS outbox.schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    repeatable: bool

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    migration: Migration
    state: str  # "applied", "pending", "changed" (repeatable, will re-run)


def discover(sql_dir: Path) -> list[Migration]:
    versioned: list[Migration] = []
    repeatable: list[Migration] = []
    for p in sorted(sql_dir.glob("*.sql")):
        if m := _VERSIONED.match(p.name):
            versioned.append(Migration(m.group(1), m.group(2), p, repeatable=False))
        elif p.name.startswith("R__"):
            repeatable.append(Migration(p.stem, p.stem[3:], p, repeatable=True))
    versioned.sort(key=lambda m: int(m.version))
    return versioned + repeatable


def _connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(dsn, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(str(exc).strip()) from exc


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    conn.execute(_BOOTSTRAP)
    rows = conn.execute("SELECT version, checksum FROM outbox.schema_migrations").fetchall()
    return {str(v): str(c) for v, c in rows}


def status(dsn: str, sql_dir: Path) -> list[MigrationStatus]:
    """Applied and pending migrations.

    Raises:
        DatabaseUnavailableError: Postgres could not be reached.
    """
    with _connect(dsn) as conn:
        applied = _applied(conn)
    out = []
    for m in discover(sql_dir):
        if m.version not in applied:
            state = "pending"
        elif applied[m.version] != m.checksum:
            state = "changed"
        else:
            state = "applied"
        out.append(MigrationStatus(m, state))
    return out


def migrate(dsn: str, sql_dir: Path) -> list[Migration]:
    """Apply what is pending; return what was applied (empty when up to date).

    Raises:
        DatabaseUnavailableError: Postgres could not be reached.
        MigrationError: a migration failed (its transaction is rolled back) or an
            applied versioned migration was edited.
    """
    done: list[Migration] = []
    with _connect(dsn) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            applied = _applied(conn)
            for m in discover(sql_dir):
                known = applied.get(m.version)
                if known == m.checksum:
                    continue
                if known is not None and not m.repeatable:
                    raise MigrationError(
                        m.version,
                        f"{m.path.name} was edited after it was applied; add a new "
                        "numbered migration instead of changing an applied one",
                    )
                try:
                    with conn.transaction():
                        conn.execute(m.sql.encode())
                        conn.execute(
                            "INSERT INTO outbox.schema_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s) ON CONFLICT (version) DO UPDATE "
                            "SET checksum = EXCLUDED.checksum, applied_at = now()",
                            (m.version, m.name, m.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        m.version, f"{m.path.name} failed: {str(exc).strip()}"
                    ) from exc
                done.append(m)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """Postgres' SCRAM-SHA-256 verifier of ``password`` (RFC 5802, RFC 7677):
    what ``ALTER ROLE ... PASSWORD`` stores, so the clear text never reaches the
    server, its statement log or pg_stat_activity."""
    import base64
    import hmac
    import os
    import unicodedata

    salt = salt if salt is not None else os.urandom(16)
    # SASLprep's core for the passwords people type: NFKC (Postgres does the same).
    salted = hashlib.pbkdf2_hmac("sha256", unicodedata.normalize("NFKC", password).encode(),
                                 salt, iterations)  # fmt: skip
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def set_role_password(dsn: str, role: str, password: str) -> None:
    """Set ``role``'s password (as a SCRAM verifier).

    Raises:
        DatabaseUnavailableError: Postgres cannot be reached.
        MigrationError: the role does not exist or may not be altered.
    """
    from psycopg import sql

    from relay.supervisor import first_line

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(scram_verifier(password))))  # fmt: skip
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(first_line(str(exc))) from exc
    except psycopg.Error as exc:
        raise MigrationError(f"role {role}", first_line(str(exc))) from exc
