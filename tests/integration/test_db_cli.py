"""`outbox db migrate` sets the CDC role's password from a secret file, as a
SCRAM verifier (the clear text never reaches the server)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from relay.migrations import scram_verifier
from tests.fix_stack import Database


def test_migrate_sets_the_cdc_password_from_a_file(db: Database, tmp_path: Path) -> None:
    secret = tmp_path / "cdc_password"
    secret.write_text("s3cret with spaces and ü\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update({"OUTBOX_PG_DSN": db.dsn, "OUTBOX_CDC_PASSWORD_FILE": str(secret),
                "OUTBOX_CDC_USER": "outbox_cdc"})  # fmt: skip
    try:
        out = subprocess.run([sys.executable, "-m", "outbox.cli", "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "set the password of outbox_cdc" in out.stdout
        assert "s3cret" not in out.stdout + out.stderr
        with psycopg.connect(db.dsn) as conn:
            row = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'outbox_cdc'").fetchone()  # fmt: skip
        assert row is not None and str(row[0]).startswith("SCRAM-SHA-256$4096:")
        salt = base64.b64decode(str(row[0]).split("$")[1].split(":")[1])
        assert scram_verifier("s3cret with spaces and ü", salt=salt) == row[0]
        both = dict(env, OUTBOX_CDC_PASSWORD="x")
        out = subprocess.run([sys.executable, "-m", "outbox.cli", "db", "migrate"], env=both,
                             capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert out.returncode == 2 and "not both" in out.stderr, out.stderr
    finally:
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute("ALTER ROLE outbox_cdc PASSWORD NULL")
