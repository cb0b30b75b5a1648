"""The outbox janitor: delete rows only once they are proven captured.

Proof: a *watermark* is taken as (xmin of a fresh snapshot, then the current
WAL insert position L). Every transaction older than that xmin had finished,
so its commit record lies before L. Debezium advances the slot's
``confirmed_flush_lsn`` only after Kafka acknowledged the records and Connect
committed their offsets; once it is at or past L, every row written by a
transaction older than the xmin (``txid < xmin``) is in Kafka and may go.
Rows are deleted in small batches, so the janitor never holds long locks.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import psycopg

log = logging.getLogger(__name__)

# Both outboxes are captured by the same slot, so one watermark covers both.
OUTBOX_TABLES = ("outbox.teacher_notifications", "outbox.domain_events")


def parse_lsn(lsn: str) -> int:
    """``"16/B374D848"`` as an integer."""
    hi, _, lo = lsn.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


@dataclass(frozen=True)
class Watermark:
    xmin: int
    lsn: int


def usable(watermarks: deque[Watermark], confirmed_lsn: int) -> Watermark | None:
    """Pop every watermark the slot has confirmed; return the newest of them (pure)."""
    best = None
    while watermarks and watermarks[0].lsn <= confirmed_lsn:
        best = watermarks.popleft()
    return best


class Janitor:
    def __init__(self, slot_name: str, *, batch: int = 1000, max_watermarks: int = 1000) -> None:
        self.slot_name = slot_name
        self.batch = batch
        self.watermarks: deque[Watermark] = deque(maxlen=max_watermarks)
        self.deleted_total = 0

    async def tick(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
        """Take a watermark, then delete what an earlier confirmed one covers.

        ``conn`` must be in autocommit mode. Returns the rows deleted.
        """
        row = await (
            await conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        ).fetchone()
        lsn_row = await (await conn.execute("SELECT pg_current_wal_lsn()::text")).fetchone()
        assert row is not None and lsn_row is not None
        self.watermarks.append(Watermark(int(str(row[0])), parse_lsn(str(lsn_row[0]))))
        slot = await (
            await conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot_name,),
            )
        ).fetchone()
        if slot is None or slot[0] is None:
            return 0
        mark = usable(self.watermarks, parse_lsn(str(slot[0])))
        if mark is None:
            return 0
        deleted = 0
        for table in OUTBOX_TABLES:
            while True:
                cur = await conn.execute(
                    f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                    f"SELECT ctid FROM {table} WHERE txid < %s::text::xid8 LIMIT %s))",
                    (str(mark.xmin), self.batch),
                )
                deleted += cur.rowcount
                if cur.rowcount < self.batch:
                    break
        if deleted:
            log.info("janitor deleted %d captured outbox rows", deleted)
        self.deleted_total += deleted
        return deleted
