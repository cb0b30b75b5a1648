"""Replication-slot health: the query (adapter) and its classification (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

SLOT_SQL = """
SELECT s.slot_name, s.active, s.active_pid, s.wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
       s.confirmed_flush_lsn::text AS confirmed_flush_lsn,
       (SELECT extract(epoch FROM now() - beat_at) FROM outbox.heartbeat WHERE id = 1) AS heartbeat_age_s,
       (SELECT count(*) FROM outbox.teacher_notifications) AS backlog
FROM pg_replication_slots s WHERE s.slot_name = %s
"""

# Domain events waiting to be shipped and cleaned, per topic.
EVENTS_BACKLOG_SQL = "SELECT topic, count(*) FROM outbox.domain_events GROUP BY topic"

NO_SLOT_SQL = """
SELECT (SELECT extract(epoch FROM now() - beat_at) FROM outbox.heartbeat WHERE id = 1),
       (SELECT count(*) FROM outbox.teacher_notifications)
"""


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    CRITICAL = "critical"


@dataclass(frozen=True)
class SlotStats:
    slot_name: str
    exists: bool
    active: bool = False
    active_pid: int | None = None
    wal_status: str | None = None
    retained_bytes: int = 0
    lag_bytes: int = 0
    confirmed_flush_lsn: str | None = None
    heartbeat_age_s: float | None = None
    backlog: int = 0


@dataclass(frozen=True)
class SlotAssessment:
    level: Level
    problems: list[str]


def assess(
    stats: SlotStats, *, warn_bytes: int, critical_bytes: int, heartbeat_warn_s: float
) -> SlotAssessment:
    """Warn before the slot can hurt the database (pure)."""
    problems: list[str] = []
    level = Level.OK
    if not stats.exists:
        return SlotAssessment(
            Level.WARN, [f"slot {stats.slot_name} does not exist yet (connector not started?)"]
        )
    if stats.retained_bytes >= critical_bytes:
        level = Level.CRITICAL
        problems.append(f"slot retains {_mib(stats.retained_bytes)} of WAL (critical at {_mib(critical_bytes)}); "
                        "fix the connector or drop the slot before the disk fills")  # fmt: skip
    elif stats.retained_bytes >= warn_bytes:
        level = Level.WARN
        problems.append(
            f"slot retains {_mib(stats.retained_bytes)} of WAL (warn at {_mib(warn_bytes)})"
        )
    if not stats.active:
        level = max(level, Level.WARN, key=_order)
        problems.append("slot is inactive: no connector is reading it, so WAL piles up")
    if stats.wal_status == "lost":
        level = Level.CRITICAL
        problems.append(
            "slot lost required WAL: recreate the connector and its slot (see docs/operations.md)"
        )
    if stats.heartbeat_age_s is not None and stats.heartbeat_age_s > heartbeat_warn_s:
        level = max(level, Level.WARN, key=_order)
        problems.append(
            f"last heartbeat {stats.heartbeat_age_s:.0f} s ago (warn after {heartbeat_warn_s:.0f} s)"
        )
    return SlotAssessment(level, problems)


def _order(level: Level) -> int:
    return {Level.OK: 0, Level.WARN: 1, Level.CRITICAL: 2}[level]


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def from_row(
    slot_name: str, row: tuple[Any, ...] | None, fallback: tuple[Any, ...] | None
) -> SlotStats:
    if row is None:
        hb, backlog = fallback or (None, 0)
        return SlotStats(slot_name, False, heartbeat_age_s=float(hb) if hb is not None else None,
                         backlog=int(backlog or 0))  # fmt: skip
    name, active, pid, wal_status, retained, lag, lsn, hb, backlog = row
    return SlotStats(
        slot_name=str(name),
        exists=True,
        active=bool(active),
        active_pid=int(str(pid)) if pid is not None else None,
        wal_status=str(wal_status) if wal_status is not None else None,
        retained_bytes=int(str(retained or 0)),
        lag_bytes=int(str(lag or 0)),
        confirmed_flush_lsn=str(lsn) if lsn is not None else None,
        heartbeat_age_s=float(str(hb)) if hb is not None else None,
        backlog=int(str(backlog or 0)),
    )
