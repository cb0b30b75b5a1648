"""One rule set: the database trigger and the Python contract accept and refuse
the same documents (real Postgres).

Each case is JSON text, inserted as a raw outbox row and read by
``contracts.parse_notification`` and by the router's reader
``contracts.read_document``. All must agree on accept/refuse; where the
database refuses with one of our SQLSTATEs, Python must name the same one among
its violations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from contracts import InvalidNotificationError
from contracts.notification import parse_notification, read_document
from tests.adversarial.docs import documents, hostile
from tests.fix_stack import Database

# Inserts each text in a subtransaction that is always rolled back: one round
# trip for a whole list, and no row is left behind.
_VERDICTS = """
CREATE FUNCTION pg_temp.verdicts(docs text[]) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    FOREACH d IN ARRAY docs LOOP
        BEGIN
            INSERT INTO outbox.teacher_notifications (payload) VALUES (d::jsonb);
            RAISE EXCEPTION USING ERRCODE = 'OB999';
        EXCEPTION WHEN OTHERS THEN
            RETURN NEXT CASE WHEN SQLSTATE = 'OB999' THEN 'accepted' ELSE SQLSTATE END;
        END;
    END LOOP;
END
$$;
"""


Reader = Callable[..., object]


@pytest.fixture(scope="module")
def pg(module_db: Database) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(module_db.dsn, autocommit=True) as conn:
        conn.execute(_VERDICTS)
        yield conn


def db_verdicts(conn: psycopg.Connection[Any], docs: list[str]) -> list[str]:
    """'accepted' or the SQLSTATE per document; 'unsendable' for text that
    cannot even reach Postgres (a NUL or a lone surrogate in the text)."""
    sendable = [d for d in docs if "\x00" not in d and not _has_surrogate(d)]
    rows = conn.execute("SELECT * FROM pg_temp.verdicts(%s)", (sendable,)).fetchall()
    it = iter(str(r[0]) for r in rows)
    return [next(it) if d in sendable else "unsendable" for d in docs]


def _has_surrogate(s: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in s)


def py_verdict(doc: str, reader: Reader = parse_notification) -> set[str] | None:
    """None if accepted, else the SQLSTATEs of the violations."""
    try:
        reader(doc, now=datetime.now(UTC))
    except InvalidNotificationError as exc:
        return {v.sqlstate for v in exc.violations}
    return None


def disagreements(conn: psycopg.Connection[Any], docs: list[str]) -> list[str]:
    """Where a reader of the contract (the model's, or the router's
    ``read_document``, as UTF-8 bytes the way Kafka hands it over) and the
    database differ."""
    out = []
    for doc, db in zip(docs, db_verdicts(conn, docs), strict=True):
        for name, reader, text in (("parse_notification", parse_notification, doc),
                                   ("read_document", read_document,
                                    doc.encode(errors="surrogatepass"))):  # fmt: skip
            py = py_verdict(text, reader)  # type: ignore[arg-type]
            if (db == "accepted") != (py is None):
                out.append(f"db {db}, {name} {py or 'accepted'}: {doc[:300]}")
            elif py is not None and db.startswith("OB") and db not in py:
                out.append(f"db {db}, {name} {sorted(py)}: {doc[:300]}")
    return out


def test_named_hostile_documents_agree(pg: psycopg.Connection[Any]) -> None:
    cases = hostile()
    verdicts = dict(zip(cases, db_verdicts(pg, list(cases.values())), strict=True))
    bad = disagreements(pg, list(cases.values()))
    assert not bad, "\n".join(bad)
    # The cases that stopped delivery are refused now, the boundaries kept.
    for refused in ("deep payload 33", "deep payload 33 via array", "deep payload 300", "deep payload 1500", "5000-digit number",
                    "1.1 MB teacher_id", "tab-only teacher_id", "deadline +00", "deadline 24:00",
                    "deadline year 10000", "deadline Jan 1 2099", "payload 33000 x é",
                    "number teacher_id", "extra key txid", "action_required as string"):  # fmt: skip
        assert verdicts[refused] != "accepted", refused
    for kept in ("valid", "valid critical", "deep payload 32 (limit)", "deep payload 32 via array", "15-digit integer",
                 "128-char teacher_id", "128 astral chars teacher_id", "payload at limit",
                 "payload 32000 x é", "deadline year 2199", "NFC teacher_id", "NFD teacher_id",
                 "emoji and U+2028 in payload", "trailing zeros 1.50", "1e2", "-0.0"):  # fmt: skip
        assert verdicts[kept] == "accepted", kept


# 50 x 200 = 10,000 documents. No shrinking: the message shows each document
# the two sides disagree on, and shrinking lists of large documents is slow.
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck),
          phases=(Phase.explicit, Phase.reuse, Phase.generate))  # fmt: skip
@given(st.lists(documents(), min_size=200, max_size=200))
def test_generated_documents_agree(pg: psycopg.Connection[Any], docs: list[str]) -> None:
    bad = disagreements(pg, docs)
    assert not bad, "\n".join(bad[:10])
