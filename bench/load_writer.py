"""A load-generating service: commits notifications at a fixed rate.

    python -m bench.load_writer DSN RATE DURATION_S TEACHERS OUT [--prefix P]

Each 10 ms tick commits rate/100 notifications in one transaction (one per
transaction below 100/s). Writes JSON lines (event id, teacher, commit time).
"""

from __future__ import annotations

import json
import sys
import time

import psycopg

SQL = ("SELECT outbox.notify_teacher(t, 'batch_processing_started', jsonb_build_object('i', i), 'bench', 'b-1') "
       "FROM unnest(%s::text[], %s::int[]) AS x(t, i)")  # fmt: skip


def main() -> None:
    dsn, rate_s, dur_s, teachers_s, out = sys.argv[1:6]
    prefix = sys.argv[7] if len(sys.argv) > 7 and sys.argv[6] == "--prefix" else "bench-t"
    rate, duration, teachers = float(rate_s), float(dur_s), int(teachers_s)
    total = int(rate * duration)
    per_tx = max(1, round(rate / 100))
    rows: list[tuple[str, str, float]] = []
    with psycopg.connect(dsn) as conn:
        start = time.monotonic()
        i = 0
        while i < total:
            due = start + i / rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            n = min(per_tx, total - i)
            ts = [f"{prefix}-{(i + k) % teachers}" for k in range(n)]
            ids = conn.execute(SQL, (ts, list(range(i, i + n)))).fetchall()
            conn.commit()
            t = time.time()
            rows += [(str(r[0]), ts[k], t) for k, r in enumerate(ids)]
            i += n
        elapsed = time.monotonic() - start
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(
        json.dumps({"sent": len(rows), "elapsed_s": elapsed, "achieved_rate": len(rows) / elapsed}),
        flush=True,
    )


if __name__ == "__main__":
    main()
