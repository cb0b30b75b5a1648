"""Hostile rows through the real pipeline (Postgres -> Debezium in Connect ->
broker -> router -> WebSocket): what the database refuses never stops delivery,
and what it accepts reaches the teacher exactly as written."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from router.auth import mint
from tests.fix_pipeline import Pipeline
from tests.fix_router import SECRET, Client, wait_ready

pytestmark = pytest.mark.e2e

NOTIFY = "SELECT outbox.notify_teacher(%s, 'class_created', %s::jsonb, %s, NULL, 'c-1')"

# Payloads Debezium's JSON expansion used to change or choke on, and boundaries.
KEPT: list[str] = [
    '{"a": []}',
    '{"a": [1, "a", null, true]}',
    '{"a": [{"x": 1}, {"y": "z"}]}',
    '{"": 1, "a b": 2, "ü": "😀\\u2028é"}',
    '{"n": 1.50, "m": 123456789012345, "k": 0.000000000000001, "z": -0.0}',
    '{"d": ' + '{"a": ' * 31 + "1" + "}" * 31 + "}",
    '{"s": "' + "x" * 65000 + '"}',
]
# (teacher id, payload, correlation id) the issue found accepted by the database.
REFUSED: list[tuple[str, str, str]] = [
    ("hostile-t", '{"d": ' + '{"a": ' * 299 + "1" + "}" * 299 + "}", "c"),
    ("hostile-t", '{"d": ' + "[" * 1499 + "]" * 1499 + "}", "c"),
    ("hostile-t", '{"n": ' + "9" * 5000 + "}", "c"),
    ("t" * 1_100_000, "{}", "c"),
    ("\t", "{}", "c"),
    ("hostile-t", "{}", "\u3000"),
    ("hostile-t\nforged", "{}", "c"),
    ("hostile-t", '{"s": "' + "é" * 33000 + '"}', "c"),
    ("hostile-t", '{"n": 1e400}', "c"),
]


async def test_refused_rows_do_not_stop_delivery_and_kept_rows_arrive_intact(
    pipeline: Pipeline,
) -> None:
    await wait_ready(pipeline.router.port, 60)
    c = await Client.open(pipeline.router.port, mint(SECRET, "hostile-t", 3600, now=time.time()))
    refused: list[str] = []
    sent: list[tuple[str, Any]] = []
    with psycopg.connect(pipeline.db.dsn, autocommit=True) as conn:
        for i, (teacher, payload, corr) in enumerate(REFUSED):
            try:
                conn.execute(NOTIFY, (teacher, payload, corr))
            except psycopg.Error as exc:
                assert exc.sqlstate and exc.sqlstate.startswith("OB"), (
                    i,
                    exc.sqlstate,
                    str(exc)[:200],
                )
                refused.append(exc.sqlstate)
            # after each refused row, a good one from the same service
            row = conn.execute(NOTIFY, ("hostile-t", KEPT[i % len(KEPT)], f"good-{i}")).fetchone()
            assert row is not None
            sent.append((str(row[0]), json.loads(KEPT[i % len(KEPT)])))
        for j, payload in enumerate(KEPT):
            row = conn.execute(NOTIFY, ("hostile-t", payload, f"kept-{j}")).fetchone()
            assert row is not None
            sent.append((str(row[0]), json.loads(payload)))
    assert len(refused) == len(REFUSED)
    got = await c.collect(len(sent), timeout=90)
    assert [f["id"] for f in got] == [eid for eid, _ in sent]
    for f, (_, payload) in zip(got, sent, strict=True):
        assert f["notification"]["payload"] == payload
    await c.quiet(1)
    assert len(c.notifications()) == len(sent)
    await c.close()
    # The router dead-lettered nothing: what the database accepts, it delivers.
    log = pipeline.router.log.read_text()
    assert "dead-lettering" not in log
