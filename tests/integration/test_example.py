"""The runnable example writes its domain row, domain event and notification together."""

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
        (ev,) = conn.execute(
            "SELECT topic, aggregateid, envelope FROM outbox.domain_events"
        ).fetchall()
    assert cls[1:] == ("t-ex", "9C")
    assert n[0]["class_id"] == cls[0]
    assert n[0]["teacher_id"] == "t-ex"
    assert ev[:2] == ("huleedu.class_management.class.created.v1", cls[0])
    assert ev[2]["source"] == "class_management" and ev[2]["event_type"] == "ClassCreated"
    assert ev[2]["data"] == {"class_id": cls[0], "name": "9C", "owner": "t-ex"}
    assert ev[2]["correlation_id"] == n[0]["correlation_id"]
