"""Writer cost: notify_teacher() against a plain INSERT of the same row, and the
cost of the outbox on a service transaction (domain insert alone against domain
insert + notification). Variants are interleaved round by round in one run.

    python -m bench.writer [--rows 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.common import cleanup_on_sigterm, summary, write_result
from contracts import build_notification
from relay.migrations import migrate
from relay.resources import data_dir
from stack.manager import StackManager
from stack.settings import StackSettings

PAYLOAD = {"class_name": "7B English", "students": 28}


def variants(conn: psycopg.Connection[Any]) -> dict[str, Callable[[int], None]]:
    row_json = build_notification("class_created", "t-1", PAYLOAD, "corr", class_id="c-1").to_json()

    def plain_insert(i: int) -> None:
        conn.execute("INSERT INTO outbox.teacher_notifications (id, aggregateid, type, payload) "
                     "VALUES (%s, 't-1', 'class_created', %s::jsonb)", (uuid.uuid4(), row_json))  # fmt: skip
        conn.commit()

    def notify(i: int) -> None:
        conn.execute(
            "SELECT outbox.notify_teacher('t-1', 'class_created', %s, 'corr', NULL, 'c-1')",
            (Jsonb(PAYLOAD),),
        )
        conn.commit()

    def domain_only(i: int) -> None:
        conn.execute(
            "INSERT INTO classes (id, teacher_id, name) VALUES (%s, 't-1', '7B')",
            (uuid.uuid4().hex,),
        )
        conn.commit()

    def domain_and_notify(i: int) -> None:
        conn.execute(
            "INSERT INTO classes (id, teacher_id, name) VALUES (%s, 't-1', '7B')",
            (uuid.uuid4().hex,),
        )
        conn.execute(
            "SELECT outbox.notify_teacher('t-1', 'class_created', %s, 'corr', NULL, 'c-1')",
            (Jsonb(PAYLOAD),),
        )
        conn.commit()

    return {"plain_insert": plain_insert, "notify_teacher": notify, "domain_only": domain_only,
            "domain_and_notify": domain_and_notify}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cleanup_on_sigterm()  # its stack is stopped in the finally below
    tmp = Path(tempfile.mkdtemp(prefix="outbox-bench-writer-"))
    tmp.chmod(0o755)
    # The embedded Postgres runs with fsync=off, so this measures the statements,
    # not the disk: the ratios are what matter.
    mgr = StackManager(StackSettings(), state_dir=tmp)
    try:
        pg = mgr.start_postgres()
        migrate(pg.url, data_dir("sql"))
        per: dict[str, list[float]] = {}
        with psycopg.connect(pg.url) as conn:
            conn.execute("CREATE TABLE classes (id text PRIMARY KEY, teacher_id text, name text)")
            conn.commit()
            vs = variants(conn)
            for fn in vs.values():  # warm-up
                for i in range(200):
                    fn(i)
            for r in range(args.rounds):
                for name, fn in vs.items() if r % 2 == 0 else reversed(list(vs.items())):
                    t0 = time.perf_counter()
                    for i in range(args.rows):
                        fn(i)
                    per.setdefault(name, []).append((time.perf_counter() - t0) / args.rows * 1e6)
        us = {k: summary(v) for k, v in per.items()}
        ratio_fn = [a / b for a, b in zip(per["notify_teacher"], per["plain_insert"], strict=True)]
        ratio_txn = [
            a / b for a, b in zip(per["domain_and_notify"], per["domain_only"], strict=True)
        ]
        result = {"rows_per_round": args.rows, "us_per_commit": us,
                  "notify_vs_plain_insert": summary(ratio_fn),
                  "outbox_cost_on_service_txn": summary(ratio_txn)}  # fmt: skip
        path = write_result("writer", result)
        for k, v in us.items():
            print(
                f"{k:<20} median {v['median']:7.1f} us/commit (min {v['min']:.1f}, max {v['max']:.1f})"
            )
        print(f"notify_teacher / plain INSERT: {result['notify_vs_plain_insert']['median']:.2f}x "
              f"(target <= 1.5x)")  # fmt: skip
        print(
            f"domain+notify / domain only:  {result['outbox_cost_on_service_txn']['median']:.2f}x"
        )
        print(f"wrote {path}")
        json.dumps(result)
    finally:
        mgr.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
