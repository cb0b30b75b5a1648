"""The runnable example writes its domain row and notification together."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from tests.fix_stack import Database


def test_example_service_commits_class_and_notification(db: Database) -> None:
    out = subprocess.run(
        [sys.executable, "examples/class_management_service.py", "--dsn", db.dsn,
         "--teacher", "t-ex", "--name", "9C"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert "committed" in out.stdout
    with psycopg.connect(db.dsn) as conn:
        (cls,) = conn.execute("SELECT id, teacher_id, name FROM demo_classes").fetchall()
        (n,) = conn.execute("SELECT payload FROM outbox.teacher_notifications").fetchall()
    assert cls[1:] == ("t-ex", "9C")
    assert n[0]["class_id"] == cls[0]
    assert n[0]["teacher_id"] == "t-ex"
