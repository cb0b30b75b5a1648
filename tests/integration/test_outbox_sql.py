"""The SQL outbox, notify_teacher() and the Python writer API on a real Postgres."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from contracts import CATALOG, TeacherNotificationRequestedV1, build_notification, enqueue
from contracts.catalog import DeadlineRule, catalog_sql, requires_batch_id, requires_class_id
from contracts.outbox import enqueue_async
from contracts.words import EXAMPLES
from relay.migrations import migrate, status
from relay.resources import data_dir
from tests.fix_stack import Database

FUTURE = datetime.now(UTC) + timedelta(days=2)


def ids(t: str) -> dict[str, str | None]:
    return {
        "batch_id": "b-1" if requires_batch_id(t) else None,
        "class_id": "c-1" if requires_class_id(t) else None,
    }


def rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT id, aggregatetype, aggregateid, type, payload FROM outbox.teacher_notifications"
        ).fetchall()


def notify_sql(cur: psycopg.Cursor[Any], t: str, teacher: str = "t-1", **kw: Any) -> uuid.UUID:
    i = ids(t)
    deadline = kw.pop("deadline", FUTURE if CATALOG[t].deadline is DeadlineRule.REQUIRED else None)
    row = cur.execute(
        "SELECT outbox.notify_teacher(%s, %s, %s, %s, %s, %s, %s)",
        (teacher, t, Jsonb(kw.pop("payload", {"k": "v"})), "corr-1", i["batch_id"],
         i["class_id"], deadline),
    ).fetchone()  # fmt: skip
    assert row is not None
    return uuid.UUID(str(row[0]))


def test_migrations_are_idempotent_and_catalog_matches(db: Database) -> None:
    assert migrate(db.dsn, data_dir("sql")) == []
    assert {s.state for s in status(db.dsn, data_dir("sql"))} == {"applied"}
    assert (data_dir("sql") / "R__catalog.sql").read_text() == catalog_sql()
    with psycopg.connect(db.dsn) as conn:
        got = conn.execute(
            "SELECT type, service, priority, priority_rank, category, action_required, "
            "deadline_rule, default_deadline FROM outbox.notification_catalog"
        ).fetchall()
    want = {
        (e.type, e.service, e.priority.value, e.priority.rank, e.category.value,
         e.action_required, e.deadline.value, e.default_deadline)
        for e in CATALOG.values()
    }  # fmt: skip
    assert set(got) == want


def test_commit_writes_one_row_rollback_none(db: Database) -> None:
    with psycopg.connect(db.dsn) as conn:
        notify_sql(conn.cursor(), "class_created")
        conn.rollback()
        assert rows(db.dsn) == []
        eid = notify_sql(conn.cursor(), "class_created", teacher="t-9")
        conn.commit()
    (row,) = rows(db.dsn)
    assert row[0] == eid
    assert row[1:4] == ("teacher", "t-9", "class_created")
    n = TeacherNotificationRequestedV1.model_validate(row[4])
    assert (n.teacher_id, n.class_id, n.payload) == ("t-9", "c-1", {"k": "v"})


@pytest.mark.parametrize("t", sorted(CATALOG))
def test_every_type_round_trips_through_sql_and_python(module_db: Database, t: str) -> None:
    dl = FUTURE if CATALOG[t].deadline is DeadlineRule.REQUIRED else None
    py_n = build_notification(t, f"t-{t}", {"n": 1, "s": "x"}, "corr-1", deadline_timestamp=dl,
                              **ids(t))  # fmt: skip
    with psycopg.connect(module_db.dsn) as conn:
        sql_id = notify_sql(conn.cursor(), t, teacher=f"t-{t}", payload={"n": 1, "s": "x"},
                            deadline=dl)  # fmt: skip
        py_id = enqueue(conn.cursor(), py_n)
        conn.commit()
        got = dict(
            conn.execute(
                "SELECT id, payload FROM outbox.teacher_notifications WHERE id IN (%s, %s)",
                (sql_id, py_id),
            ).fetchall()
        )
    from_sql = TeacherNotificationRequestedV1.model_validate(got[sql_id])
    from_py = TeacherNotificationRequestedV1.model_validate(got[py_id])
    assert from_py == py_n
    assert from_sql.model_dump(exclude={"deadline_timestamp"}) == py_n.model_dump(
        exclude={"deadline_timestamp"}
    )
    if dl is not None:
        assert from_sql.deadline_timestamp == dl


def test_default_deadline_filled_by_sql(db: Database) -> None:
    with psycopg.connect(db.dsn) as conn:
        notify_sql(conn.cursor(), "student_matching_confirmation_required", deadline=None)
        conn.commit()
    n = TeacherNotificationRequestedV1.model_validate(rows(db.dsn)[0][4])
    assert n.deadline_timestamp is not None
    left = n.deadline_timestamp - datetime.now(UTC)
    assert timedelta(hours=23) < left <= timedelta(hours=24)


def good_payload(t: str = "batch_validation_failed") -> dict[str, Any]:
    return build_notification(t, "t-1", {}, "c", **ids(t)).model_dump(mode="json")  # type: ignore[arg-type]


INVALID_FUNCTION_CASES = [
    ("unknown type", ("t", "nope", {}, "c", None, None, None), "OB001", "unknown notification_type"),
    ("empty teacher", ("", "class_created", {}, "c", None, "k", None), "OB004", "teacher_id"),
    ("empty correlation", ("t", "class_created", {}, " ", None, "k", None), "OB004", "correlation_id"),
    ("missing batch", ("t", "batch_file_removed", {}, "c", None, None, None), "OB004", "batch_id"),
    ("missing class", ("t", "class_created", {}, "c", None, None, None), "OB004", "class_id"),
    ("missing deadline", ("t", "student_matching_deadline_approaching", {}, "c", "b", None, None),
     "OB003", "requires a deadline"),
    ("past deadline", ("t", "student_matching_deadline_approaching", {}, "c", "b", None,
                       datetime.now(UTC) - timedelta(hours=1)), "OB003", "already past"),
    ("deadline not allowed", ("t", "class_created", {}, "c", None, "k", FUTURE), "OB003",
     "takes no deadline"),
    ("payload too big", ("t", "class_created", {"x": "y" * 70000}, "c", None, "k", None),
     "OB005", "65536"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "sqlstate", "text"),
    [c[1:] for c in INVALID_FUNCTION_CASES],
    ids=[c[0] for c in INVALID_FUNCTION_CASES],
)
def test_function_rejects(
    module_db: Database, args: tuple[Any, ...], sqlstate: str, text: str
) -> None:
    a = list(args)
    a[2] = Jsonb(a[2])
    with psycopg.connect(module_db.dsn) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("SELECT outbox.notify_teacher(%s, %s, %s, %s, %s, %s, %s)", a)
        conn.rollback()
        count = conn.execute(
            "SELECT count(*) FROM outbox.teacher_notifications WHERE payload->>'correlation_id' = "
            "%s",
            (args[3],),
        ).fetchone()
    assert ei.value.sqlstate == sqlstate
    assert text in str(ei.value)
    assert count == (0,)


def _mutate(**changes: Any) -> dict[str, Any]:
    p = good_payload()
    for k, v in changes.items():
        if v is ...:
            p.pop(k)
        else:
            p[k] = v
    return p


INVALID_RAW_CASES = [
    ("unknown type", _mutate(notification_type="nope"), "OB001"),
    ("priority contradicts catalog", _mutate(priority="low"), "OB002"),
    ("category contradicts catalog", _mutate(category="system_alerts"), "OB002"),
    ("action contradicts catalog", _mutate(action_required=False), "OB002"),
    ("no teacher", _mutate(teacher_id=...), "OB004"),
    ("no batch", _mutate(batch_id=None), "OB004"),
    ("naive deadline", _mutate(deadline_timestamp="2030-01-01T10:00:00"), "OB003"),
    ("past deadline", _mutate(deadline_timestamp="2020-01-01T10:00:00Z"), "OB003"),
    ("inner payload not object", _mutate(payload=[1]), "OB005"),
]


@pytest.mark.parametrize(
    ("payload", "sqlstate"),
    [c[1:] for c in INVALID_RAW_CASES],
    ids=[c[0] for c in INVALID_RAW_CASES],
)
def test_raw_insert_rejects(module_db: Database, payload: dict[str, Any], sqlstate: str) -> None:
    with psycopg.connect(module_db.dsn) as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(
                "INSERT INTO outbox.teacher_notifications (payload) VALUES (%s)", (Jsonb(payload),)
            )
        conn.rollback()
    assert ei.value.sqlstate == sqlstate
    assert ei.value.diag.message_hint


def test_raw_insert_fills_routing_columns_and_rejects_mismatch(db: Database) -> None:
    with psycopg.connect(db.dsn) as conn:
        conn.execute(
            "INSERT INTO outbox.teacher_notifications (payload) VALUES (%s)",
            (Jsonb(good_payload()),),
        )
        conn.commit()
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(
                "INSERT INTO outbox.teacher_notifications (aggregateid, payload) VALUES ('x', %s)",
                (Jsonb(good_payload()),),
            )
        conn.rollback()
        with pytest.raises(psycopg.Error, match="immutable"):
            conn.execute("UPDATE outbox.teacher_notifications SET type = 'x'")
        conn.rollback()
    assert ei.value.sqlstate == "OB002"
    (row,) = rows(db.dsn)
    assert row[2:4] == ("t-1", "batch_validation_failed")


def test_service_role_can_only_write(db: Database) -> None:
    role = f"svc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE outbox_service")
    try:
        svc = db.dsn.replace("postgres@", f"{role}@")
        with psycopg.connect(svc) as conn:
            notify_sql(conn.cursor(), "class_created")
            conn.commit()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM outbox.teacher_notifications")
            conn.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM outbox.teacher_notifications")
    finally:
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
    assert len(rows(db.dsn)) == 1


def test_publication_covers_the_outboxes_and_heartbeat_only(db: Database) -> None:
    with psycopg.connect(db.dsn) as conn:
        got = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables "
            "WHERE pubname = 'outbox_publication'"
        ).fetchall()
    assert sorted(r[0] for r in got) == [
        "outbox.domain_events", "outbox.heartbeat", "outbox.teacher_notifications"]  # fmt: skip


def test_the_publication_streams_the_inserts_but_not_the_janitors_deletes(db: Database) -> None:
    """What the WAL sender hands Debezium (pgoutput, read from a temporary slot):
    the insert of a notification and a heartbeat's upsert, not the delete the
    janitor makes of a captured row."""
    slot = f"pub_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput', true)", (slot,))
        with conn.cursor() as cur:
            nid = enqueue(cur, build_notification("batch_processing_completed", "t-pub", EXAMPLES["batch_processing_completed"],
                                                  "c-pub", batch_id="b-1"))  # fmt: skip
        conn.execute("UPDATE outbox.heartbeat SET beat_at = now() WHERE id = 1")
        conn.execute("DELETE FROM outbox.teacher_notifications WHERE id = %s", (nid,))
        messages = conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, 'proto_version', '1', "
            "'publication_names', 'outbox_publication')",
            (slot,),
        ).fetchall()
    kinds = [bytes(m[0])[:1] for m in messages]
    assert kinds.count(b"I") == 1  # the notification
    assert kinds.count(b"U") == 1  # the heartbeat
    assert kinds.count(b"D") == 0  # the delete stays in Postgres
    with psycopg.connect(db.dsn) as conn:
        pub = conn.execute(
            "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication "
            "WHERE pubname = 'outbox_publication'"
        ).fetchone()
    assert pub == (True, True, False, False)


def test_eight_concurrent_writers(db: Database) -> None:
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with psycopg.connect(db.dsn) as conn:
                for i in range(1000):
                    n = build_notification(
                        "class_roster_updated", f"t-{w}", {"i": i}, f"w{w}-{i}", class_id="k"
                    )
                    enqueue(conn.cursor(), n)
                    if i % 10 == 9:
                        conn.commit()
                conn.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(db.dsn) as conn:
        got = conn.execute(
            "SELECT aggregateid, count(*), count(DISTINCT payload->>'correlation_id') "
            "FROM outbox.teacher_notifications GROUP BY 1"
        ).fetchall()
    assert sorted(got) == [(f"t-{w}", 1000, 1000) for w in range(8)]


async def test_enqueue_async_in_callers_transaction(db: Database) -> None:
    n = build_notification("class_created", "t-async", {}, "c", class_id="k")
    async with await psycopg.AsyncConnection.connect(db.dsn) as conn:
        async with conn.cursor() as cur:
            eid = await enqueue_async(cur, n)
        await conn.rollback()
        async with conn.cursor() as cur:
            eid2 = await enqueue_async(cur, n)
        await conn.commit()
    got = await asyncio.to_thread(rows, db.dsn)
    assert [r[0] for r in got] == [eid2]
    assert eid != eid2
    assert json.loads(json.dumps(got[0][4]))["teacher_id"] == "t-async"
