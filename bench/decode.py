"""Router decode cost per record (pure CPU, no services): typical records as
Debezium sends them (the row's jsonb text), timed in this process.

    python -m bench.decode [--records 20000] [--rounds 7]

Prints microseconds per record (median of the rounds, min-max) per record kind.
Run it from two checkouts in turn (PYTHONPATH) to compare versions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from router.decode import decode


def _records() -> dict[str, tuple[bytes, list[tuple[str, bytes]]]]:
    def doc(t: str, payload: dict[str, object], **kw: object) -> bytes:
        base = {"payload": payload, "batch_id": kw.get("batch_id"), "category": kw["category"],
                "class_id": kw.get("class_id"), "priority": kw["priority"], "teacher_id": "teacher-17",
                "correlation_id": "req-8f2c", "action_required": kw.get("action", False),
                "notification_type": t, "deadline_timestamp": kw.get("deadline")}  # fmt: skip
        # Postgres' jsonb text: ", " and ": " separators
        return json.dumps(base, ensure_ascii=False).encode()

    dl = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kinds = {
        "small (class_created)": doc("class_created", {"class_name": "7B English"},
                                     category="class_management", priority="standard", class_id="c-1"),
        "typical (batch, 6 fields)": doc("batch_validation_failed",
                                         {"rejected": 2, "accepted": 28, "file_name": "essay-07.docx",
                                          "reasons": ["too short", "not a .docx"], "batch_name": "Essay 7B"},
                                         category="file_operations", priority="immediate",
                                         batch_id="batch-42", action=True),
        "critical with deadline": doc("student_matching_confirmation_required",
                                      {"essays": 30, "unmatched": 3}, category="student_workflow",
                                      priority="critical", action=True, deadline=dl),
        "floats (scores)": doc("cj_assessment_results_ready",
                               {"scores": [3.5, 4.25, 2.75, 3.0], "mean": 3.375},
                               category="processing_results", priority="high"),
    }  # fmt: skip
    headers = [("id", str(uuid.uuid4()).encode()), ("created_at", dl.encode())]
    return {k: (v, headers) for k, v in kinds.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    out = {}
    for kind, (value, headers) in _records().items():
        decode(value, headers)  # valid, and warm
        times = []
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            for _ in range(a.records):
                decode(value, headers)
            times.append((time.perf_counter() - t0) / a.records * 1e6)
        out[kind] = times
        print(f"{kind:28s} {statistics.median(times):6.2f} us  ({min(times):.2f}-{max(times):.2f})")
    print(json.dumps({k: statistics.median(v) for k, v in out.items()}))


if __name__ == "__main__":
    main()
