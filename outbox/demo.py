"""``outbox demo``: the whole pipeline on this machine, end to end.

Starts the embedded stack, migrates, runs the relay and the router as real
processes, connects one WebSocket client per demo teacher, and plays a scripted
scenario of the platform's services: each step changes a demo domain table and
notifies a teacher in the same transaction. Prints what each client receives
with its commit-to-frame latency, and a summary counted from what the clients
really got. Everything it started is stopped at the end (or on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from contracts import CATALOG, build_notification, enqueue
from contracts.events import publish_event
from contracts.words import EXAMPLES
from outbox import stages
from relay.migrations import migrate
from relay.resources import data_dir
from router.auth import mint
from router.consumer import record_headers
from router.errors import PoisonMessageError
from stack.manager import StackManager
from stack.procs import free_port, stop_pid
from stack.settings import StackSettings
from stack.state import StackState

TEACHERS = ("ms-lind", "mr-okafor", "ms-rahman")
CONNECTOR = "outbox-demo"
DOMAIN_SQL = """
CREATE SCHEMA IF NOT EXISTS demo;
CREATE TABLE IF NOT EXISTS demo.activity (
    id bigserial PRIMARY KEY, service text NOT NULL, teacher_id text NOT NULL,
    what text NOT NULL, at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Step:
    service: str
    teacher: str
    type: str
    payload: dict[str, Any]
    via_sql: bool = True  # notify_teacher() in SQL, else the Python enqueue() API
    rollback: bool = False
    deadline_in: timedelta | None = None


# The domain event behind each notification type: published in the same
# transaction, to its own topic, for other services (never to a socket).
CAUSES: dict[str, tuple[str, str]] = {
    "class_created": ("huleedu.class_management.class.created.v1", "ClassCreated"),
    "class_roster_updated": ("huleedu.class_management.roster.updated.v1", "RosterUpdated"),
    "student_matching_confirmation_required": (
        "huleedu.class_management.student_matching.requested.v1", "StudentMatchingRequested"),
    "student_matching_deadline_approaching": (
        "huleedu.class_management.student_matching.requested.v1", "StudentMatchingReminder"),
    "batch_files_uploaded": ("huleedu.file_service.batch_files.uploaded.v1", "BatchFilesUploaded"),
    "batch_file_removed": ("huleedu.file_service.batch_file.removed.v1", "BatchFileRemoved"),
    "batch_validation_failed": ("huleedu.file_service.batch.validated.v1", "BatchValidated"),
    "batch_file_corrupted": ("huleedu.file_service.batch.validated.v1", "BatchFileCorrupted"),
    "batch_registration_failed": (
        "huleedu.batch_orchestrator.batch.status_changed.v1", "BatchRegistrationFailed"),
    "batch_processing_started": (
        "huleedu.batch_orchestrator.batch.status_changed.v1", "BatchProcessingStarted"),
    "batch_processing_completed": (
        "huleedu.batch_orchestrator.batch.status_changed.v1", "BatchProcessingCompleted"),
    "batch_processing_failed": (
        "huleedu.batch_orchestrator.batch.status_changed.v1", "BatchProcessingFailed"),
    "batch_students_associated": (
        "huleedu.batch_orchestrator.batch.students_associated.v1", "BatchStudentsAssociated"),
    "batch_spellcheck_completed": (
        "huleedu.spellchecker.batch.spellcheck_completed.v1", "SpellcheckCompleted"),
    "batch_cj_assessment_completed": (
        "huleedu.cj_assessment.batch.assessment_completed.v1", "AssessmentCompleted"),
    "cj_assessment_results_ready": ("huleedu.result_aggregator.results.ready.v1", "ResultsReady"),
    "system_maintenance_scheduled": (
        "huleedu.platform.maintenance.scheduled.v1", "MaintenanceScheduled"),
}  # fmt: skip


def scenario() -> list[Step]:
    """Every catalog type at least once, a rollback, a CRITICAL deadline item."""
    lind, okafor, rahman = TEACHERS
    steps = [
        Step("class_management", lind, "class_created", {**EXAMPLES["class_created"], "message": "Class 7B English was created.", "class_name": "7B English"}),
        Step("class_management", lind, "class_roster_updated", {**EXAMPLES["class_roster_updated"], "message": "3 students joined 7B English.", "added": 3}, via_sql=False),
        Step("file_service", lind, "batch_files_uploaded", {**EXAMPLES["batch_files_uploaded"], "message": "24 essays uploaded.", "files": 24}),
        Step("batch_orchestrator", lind, "batch_students_associated", {**EXAMPLES["batch_students_associated"], "message": "Essays matched to students.", "matched": 22}),
        Step("class_management", lind, "student_matching_confirmation_required",
             {**EXAMPLES["student_matching_confirmation_required"], "message": "Confirm 2 unmatched essays in 7B English.", "unmatched": 2}),
        Step("batch_orchestrator", lind, "batch_processing_started", {**EXAMPLES["batch_processing_started"], "message": "Processing started.", "essays": 24}, via_sql=False),
        Step("spellchecker", lind, "batch_spellcheck_completed", {**EXAMPLES["batch_spellcheck_completed"], "message": "Spellcheck done.", "corrections": 311}),
        Step("cj_assessment", lind, "batch_cj_assessment_completed", {**EXAMPLES["batch_cj_assessment_completed"], "message": "Comparative judgement done."}),
        Step("result_aggregator", lind, "cj_assessment_results_ready", {**EXAMPLES["cj_assessment_results_ready"], "message": "Results for 7B English are ready."}),
        Step("batch_orchestrator", lind, "batch_processing_completed", {**EXAMPLES["batch_processing_completed"], "message": "Batch complete.", "essays": 24}),
        Step("class_management", okafor, "class_created", {**EXAMPLES["class_created"], "class_name": "9C History"}),
        Step("file_service", okafor, "batch_validation_failed", {**EXAMPLES["batch_validation_failed"], "message": "2 files are not .docx or .pdf.", "rejected": 2}),
        Step("file_service", okafor, "batch_file_corrupted", {**EXAMPLES["batch_file_corrupted"], "message": "essay-17.docx is corrupted; replace it."}, via_sql=False),
        Step("file_service", okafor, "batch_file_removed", {**EXAMPLES["batch_file_removed"], "message": "essay-17.docx removed."}),
        Step("batch_orchestrator", okafor, "batch_registration_failed", {**EXAMPLES["batch_registration_failed"], "message": "The batch has no prompt; add one and retry."}),
        Step("batch_orchestrator", okafor, "batch_processing_failed", {**EXAMPLES["batch_processing_failed"], "message": "Processing failed at the spellcheck stage."}),
        Step("class_management", okafor, "student_matching_deadline_approaching",
             {**EXAMPLES["student_matching_deadline_approaching"], "message": "Student matching for 9C History closes in 2 hours."}, deadline_in=timedelta(hours=2)),
        Step("platform", rahman, "system_maintenance_scheduled", {**EXAMPLES["system_maintenance_scheduled"], "message": "Maintenance Sunday 02:00-03:00 UTC."}),
        Step("class_management", rahman, "class_created", {**EXAMPLES["class_created"], "class_name": "Never created"}, rollback=True),
        Step("class_management", rahman, "class_roster_updated", {**EXAMPLES["class_roster_updated"], "message": "Roster of 8A Maths updated.", "added": 1}),
    ]  # fmt: skip
    assert {s.type for s in steps} >= set(CATALOG), "the demo must cover the catalog"
    assert set(CAUSES) == set(CATALOG), "every notification type needs its domain event"
    return steps


# A demo load is shaped for the embedded broker, which slows down as a
# partition's record batches pile up (docs/operations.md), from this rate on or
# when it commits this many notifications (unbatched, one batch each).
FAST_LOAD_RATE = 500
LONG_LOAD_NOTIFICATIONS = 6_000


def batched_load(rate: float, duration: float) -> bool:
    """Whether a demo load of ``rate``/s for ``duration`` s is shaped: fast, or
    long enough that one batch per notification would slow the broker (200/s
    for two minutes unbatched: p99 65 ms in the first minute, 312 in the
    second)."""
    return rate >= FAST_LOAD_RATE or rate * duration >= LONG_LOAD_NOTIFICATIONS


def demo_linger_ms(rate: float, duration: float) -> int:
    """Connect's ``linger.ms`` for a demo load: none unless batched_load; then
    enough batching that a partition gets about 3,000 record batches over the
    load (the embedded broker serves a consumer that fell behind a partition
    of 12,000 batches at a crawl), at least 20 ms, at most 250."""
    if not batched_load(rate, duration):
        return 0
    return min(250, max(20, math.ceil(duration / 3)))


# With a linger, Connect's producer should close a batch when the linger ends,
# not when Java's 16 KB default batch.size fills: at 1,000/s that is several
# batches per linger, and the embedded broker's fetch cost grows with batches.
DEMO_BATCH_BYTES = 512 * 1024


def demo_connector_overrides(linger_ms: int) -> dict[str, str]:
    """The demo connector's producer overrides for a linger: none without one;
    with one, the linger and a batch size large enough that the linger, not the
    size, decides how many batches a partition gets."""
    if not linger_ms:
        return {}
    return {"producer.override.linger.ms": str(linger_ms),
            "producer.override.batch.size": str(DEMO_BATCH_BYTES)}  # fmt: skip


def demo_partitions(rate: float, duration: float) -> int | None:
    """The notification topic's partitions for a demo load: the stack's setting
    (None) unless batched_load, then one (every fetch of a partition walks all
    its stored batches, and one partition has the fewest)."""
    return 1 if batched_load(rate, duration) else None


def load_report(rate: float, committed: int, seconds: float) -> str:
    """What the load writer achieved against what was asked (pure). Past 5 %
    short it says so: latency over time then measures a pipeline that could
    not keep up with the writer's machine, not a steady rate."""
    got = committed / seconds if seconds > 0 else 0.0
    line = (f"load: committed {committed} notifications in {seconds:.0f} s "
            f"({got:.0f}/s of the {rate:.0f}/s asked)")  # fmt: skip
    if got < 0.95 * rate:
        line += ("; this machine could not commit faster while running the whole "
                 "pipeline, so the minutes below are minutes of commits, not of "
                 f"a steady {rate:.0f}/s")  # fmt: skip
    return line


def last_minute(since: float, until: float | None) -> int | None:
    """The index of the load's last minute, which takes in a tail shorter than
    half a minute (None: the load's end is not known)."""
    return None if until is None else max(0, round((until - since) / 60) - 1)


# What the demo shows of the router per minute: its two stages, and the whole
# of the path it sees (the outbox row's created_at, set by Postgres at the
# transaction's start, -> frame written), which takes in capture as well.
DEMO_ROUTER_STAGES = {**stages.ROUTER_STAGES, "row -> frame": "outbox_router_latency_seconds"}


def minute_stages(scrapes: Sequence[str | None], final: str | None,
                  last: int | None) -> dict[int, stages.StageBuckets]:  # fmt: skip
    """The histogram bucket (ms) holding the p99 of each of the router's stages
    in each minute of a load (pure).
    ``scrapes[m]`` is the router's ``/metrics`` taken m minutes into the load
    (None: that scrape failed), ``final`` one taken after the drain. Minute m
    runs to the next scrape; the last minute (``last``) and one without a next
    scrape run to ``final``. The router's clock is when it read and wrote a
    record, not when it was committed: close to the demo's minutes of commits
    while the pipeline keeps up."""
    out: dict[int, stages.StageBuckets] = {}
    for m, before in enumerate(scrapes):
        ends = (last is not None and m >= last) or m + 1 >= len(scrapes)
        after = final if ends else scrapes[m + 1]
        if before is not None and after is not None:
            out[m] = stages.router_buckets(before, after, 0.99, DEMO_ROUTER_STAGES)
        if ends:
            break
    return out


def _bucket_text(b: tuple[float, float] | None) -> str:
    """``100-150 ms``, ``>30000 ms`` past the last bound, ``-`` for nothing."""
    if b is None:
        return "-"

    def ms(x: float) -> str:
        return f"{x:.1f}".removesuffix(".0") if x < 10 else f"{x:.0f}"

    return f">{ms(b[0])} ms" if math.isinf(b[1]) else f"{ms(b[0])}-{ms(b[1])} ms"


@dataclass
class Tally:
    sent: dict[str, float] = field(default_factory=dict)  # event id -> commit time
    rolled_back: set[str] = field(default_factory=set)
    received: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (commit time, ms)
    wrong_teacher: int = 0
    events: set[str] = field(default_factory=set)  # domain event ids committed
    events_rolled_back: set[str] = field(default_factory=set)
    events_shipped: set[str] = field(default_factory=set)  # found on their topics
    reconnects: dict[int, int] = field(default_factory=dict)  # close code -> reconnections
    unrecovered: int = 0  # resumes from a position older than the history kept

    def summary(self) -> str:
        got = [e for e in self.sent if e in self.received]
        lost = len(self.sent) - len(got)
        dup = sum(c - 1 for e, c in self.received.items() if e in self.sent and c > 1)
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        lines = [f"sent {len(self.sent)}, received {len(got)}, lost {lost}, duplicated {dup}, "
                 f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"]  # fmt: skip
        for code, n in sorted(self.reconnects.items()):
            lines.append(f"the clients reconnected with resume {n} time(s) after a {code} close "
                         f"({RECONNECT_CODES[code]})")  # fmt: skip
        if self.unrecovered:
            lines.append(f"{self.unrecovered} resume(s) were older than the history the router keeps "
                         "(OUTBOX_HISTORY_MAXLEN): what they missed was not replayed, as a page "
                         "that then reloads its view would see it")  # fmt: skip
        return "\n".join(lines)

    def by_minute(self, since: float, until: float | None = None,
                  router: dict[int, stages.StageBuckets] | None = None) -> list[str]:  # fmt: skip
        """p50/p99 of what was committed in each minute from ``since``: whether the
        pipeline holds its latency over a long run. With ``until`` (when the
        load ended) a last part shorter than half a minute counts in the minute
        before it, not as a minute of its own (a writer that kept up ends a few
        milliseconds past its last whole minute). ``router`` adds the router's
        stages of each minute (minute_stages)."""
        minutes: dict[int, list[float]] = {}
        last = last_minute(since, until)
        for t, ms in self.timeline:
            if t >= since:
                m = int((t - since) // 60)
                minutes.setdefault(m if last is None else min(m, last), []).append(ms)
        lines = []
        for m, xs in sorted(minutes.items()):
            xs.sort()
            line = (f"  minute {m + 1}: {len(xs)} frames, p50 {statistics.median(xs):.0f} ms, "
                    f"p99 {xs[min(len(xs) - 1, int(len(xs) * 0.99))]:.0f} ms")  # fmt: skip
            if router and m in router:
                line += "; router p99 in: " + ", ".join(
                    f"{stage} {_bucket_text(b)}" for stage, b in router[m].items()
                )
            lines.append(line)
        return lines

    @property
    def clean(self) -> bool:
        return (all(e in self.received for e in self.sent) and not any(c > 1 for c in self.received.values())
                and not (self.rolled_back & set(self.received)) and self.wrong_teacher == 0
                and self.events_shipped == self.events)  # fmt: skip


class Processes:
    """The relay and router processes of the demo, stopped by pid."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            p = subprocess.Popen([sys.executable, "-m", "outbox.cli", *args], env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.procs.append((name, p))
        return p

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                stop_pid(p.pid, expect="outbox.cli", timeout=20)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        self.procs.clear()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def _workdir() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="outbox-demo-"))
    tmp.chmod(0o755)  # the unprivileged Postgres user must reach its data dir
    return tmp


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _wait_http(
    url: str, limit_s: float, what: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                r = await http.get(url)
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{what} not ready after {limit_s:.0f} s; see {log}")


async def _wait_relay_healthy(
    url: str, limit_s: float, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"relay exited:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if (await http.get(url)).json().get("health") == "healthy":
                    return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the relay did not report healthy in {limit_s:.0f} s; see {log}")


# Closes after which a client reconnects with `resume` (docs/protocol.md, "What a
# client must do"): going away, a server-side failure, too slow to keep up.
RECONNECT_CODES = {1001: "the router went away", 1011: "a router-side failure",
                   1013: "the client fell behind its send queue"}  # fmt: skip


async def _client(port: int, token: str, teacher: str, tally: Tally, ready: asyncio.Event,
                  quiet: bool) -> None:  # fmt: skip
    """One teacher's client, written to docs/protocol.md's rules: it keeps one
    position and, closed with a code that says so, reconnects with ``resume``."""
    position: str | None = None
    backoff_s = 0.2
    while True:
        ws: ClientConnection
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws", max_size=2**20) as ws:
                auth = {"type": "auth", "token": token} | ({"resume": position} if position else {})
                await ws.send(json.dumps(auth))
                async for raw in ws:
                    f = json.loads(raw)
                    if f["type"] == "replay_done":
                        position, backoff_s = f["position"], 0.2
                        tally.unrecovered += not f["recovered"]
                        ready.set()
                    if f["type"] != "notification" or f["pending"]:
                        continue
                    position = f["position"]
                    _received(tally, teacher, f, quiet)
            code = ws.close_code
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
        if code not in RECONNECT_CODES:
            return
        tally.reconnects[code] = tally.reconnects.get(code, 0) + 1
        await asyncio.sleep(backoff_s * (1 + random.random()))  # jitter
        backoff_s = min(backoff_s * 2, 5.0)


def _received(tally: Tally, teacher: str, f: dict[str, Any], quiet: bool) -> None:
    now = time.time()
    eid, n = f["id"], f["notification"]
    if n["teacher_id"] != teacher:
        tally.wrong_teacher += 1
    tally.received[eid] = tally.received.get(eid, 0) + 1
    committed = tally.sent.get(eid)
    lat = (now - committed) * 1000 if committed else None
    if lat is not None and committed is not None and tally.received[eid] == 1:
        tally.latencies_ms.append(lat)
        tally.timeline.append((committed, lat))
    if not quiet:
        _print(f"{time.strftime('%H:%M:%S')}  {teacher:<10} {n['priority'].upper():<9} "
               f"{n['notification_type']:<40} {'' if lat is None else f'{lat:6.1f} ms':>9}  "
               f"<- {CAUSES.get(n['notification_type'], ('?',))[0]}")  # fmt: skip


async def _scrape(http: httpx.AsyncClient, url: str) -> str | None:
    try:
        # Not kept alive: the router's server would log the idle connection's close.
        r = await http.get(url, headers={"Connection": "close"})
        r.raise_for_status()
        return r.text
    except httpx.HTTPError as e:
        _print(f"could not read the router's metrics at {url} ({e}); that minute shows no stages")
        return None


async def _scrape_minutes(url: str, since: float, out: list[str | None]) -> None:
    """The router's metrics at the start of every minute from ``since``, until cancelled."""
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            await asyncio.sleep(max(0.0, since + 60 * len(out) - time.time()))
            out.append(await _scrape(http, url))


def _domain_events_on_topics(bootstrap: str, ids: set[str], want: int,
                             idle_s: float = 20.0) -> set[str]:  # fmt: skip
    """Which of ``ids`` are on the domain topics: read until ``want`` are, or
    nothing new has come for ``idle_s``."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from contracts.events import EVENT_TOPICS

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "logger": logging.getLogger("outbox.demo.kafka")})  # fmt: skip
    # Every partition from the start, without a consumer group to join.
    md = c.list_topics(timeout=10)
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in sorted(EVENT_TOPICS)
              if t in md.topics for p in md.topics[t].partitions])  # fmt: skip
    seen: set[str] = set()
    last_seen = time.monotonic()
    try:
        while time.monotonic() - last_seen < idle_s and len(seen & ids) < want:
            for m in c.consume(num_messages=500, timeout=0.5):
                last_seen = time.monotonic()
                if m.error() is None:
                    try:
                        headers: list[Any] = list(record_headers(m) or [])
                    except PoisonMessageError:  # not one the demo wrote: not counted
                        continue
                    seen.update(
                        v.decode() for k, v in headers if k == "id" and isinstance(v, bytes)
                    )
    finally:
        c.close()
    return seen & ids


def _in_flight(tally: Tally) -> int:
    return sum(1 for e in tally.sent if e not in tally.received)


async def _drain(tally: Tally, idle_s: float = 20.0, limit_s: float = 900.0) -> None:
    """Wait until every committed notification has arrived, for as long as frames
    keep arriving (a pipeline that fell behind is late, not lossy): give up only
    after ``idle_s`` without progress, or ``limit_s`` in all."""
    start = last_progress = last_report = time.monotonic()
    left = _in_flight(tally)
    while left:
        await asyncio.sleep(0.5)
        now, was = time.monotonic(), left
        left = _in_flight(tally)
        if left < was:
            last_progress = now
        if now - last_progress > idle_s or now - start > limit_s:
            return
        if left and now - last_report >= 10:
            _print(f"waiting for {left} notifications still in the pipeline ...")
            last_report = now


def _commit(conn: psycopg.Connection[Any], step: Step, seq: int) -> tuple[str, str]:
    """The service's transaction: its own row, the domain event, the notification;
    the notification's id and the domain event's."""
    correlation = f"demo-{seq}-{uuid.uuid4().hex[:6]}"
    event_id = uuid.uuid4()
    topic, event_type = CAUSES[step.type]
    key = "batch-42" if step.type.startswith("batch_") else step.teacher
    data = {"teacher": step.teacher, **{k: v for k, v in step.payload.items() if k != "message"}}
    ids = {"batch_id": "batch-42" if step.type.startswith("batch_") else None,
           "class_id": "class-7b" if step.type.startswith("class_") else None}  # fmt: skip
    deadline = datetime.now(UTC) + step.deadline_in if step.deadline_in else None
    with conn.transaction(force_rollback=step.rollback):
        conn.execute("INSERT INTO demo.activity (service, teacher_id, what) VALUES (%s, %s, %s)",
                     (step.service, step.teacher, step.type))  # fmt: skip
        if step.via_sql:
            conn.execute("SELECT outbox.publish_event(%s, %s, %s, %s, %s, %s)",
                         (topic, key, event_type, Jsonb(data), correlation, event_id))  # fmt: skip
            row = conn.execute(
                "SELECT outbox.notify_teacher(%s, %s, %s, %s, %s, %s, %s)",
                (
                    step.teacher,
                    step.type,
                    Jsonb(step.payload),
                    correlation,
                    ids["batch_id"],
                    ids["class_id"],
                    deadline,
                ),
            ).fetchone()
            assert row is not None
            return str(row[0]), str(event_id)
        n = build_notification(
            step.type,
            step.teacher,
            step.payload,
            correlation,
            deadline_timestamp=deadline,
            batch_id=ids["batch_id"],
            class_id=ids["class_id"],
        )
        with conn.cursor() as cur:
            publish_event(cur, topic, key, event_type, data, correlation, event_id=event_id)
            return str(enqueue(cur, n)), str(event_id)


def _load_steps(rate: float, duration: float) -> Iterator[Step]:
    types = [
        "batch_processing_started",
        "batch_spellcheck_completed",
        "batch_files_uploaded",
        "class_roster_updated",
    ]
    for i in range(int(rate * duration)):
        yield Step("load", TEACHERS[i % len(TEACHERS)], types[i % len(types)], {"message": f"load {i}", "i": i},
                   via_sql=i % 2 == 0)  # fmt: skip


@dataclass
class DemoOptions:
    serve: bool = False
    rate: float = 0.0
    duration: float = 0.0
    step_delay_s: float = 0.15
    state_dir: Path | None = None
    quiet: bool = False
    router_port: int | None = None
    linger_ms: int = 0  # Connect's producer linger.ms for the demo's connector
    partitions: int | None = None  # the notification topic's; None: the stack's setting


async def run_demo(opts: DemoOptions) -> int:
    tmp = _workdir()
    state_dir = opts.state_dir or tmp / "stack"
    settings = StackSettings()
    if opts.partitions is not None:
        settings = settings.model_copy(update={"topic_partitions": opts.partitions})
    manager = StackManager(settings, state_dir=state_dir)
    procs = Processes(tmp)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        _print("starting the embedded stack (Postgres, Redis, broker, Kafka Connect + Debezium)...")
        stack: StackState = await asyncio.to_thread(manager.up)
        await asyncio.to_thread(migrate, stack.pg_dsn, data_dir("sql"))
        with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
            conn.execute(DOMAIN_SQL)
        secret = uuid.uuid4().hex + uuid.uuid4().hex
        router_port = opts.router_port or free_port()
        relay_port = free_port()
        env = {**os.environ, **stack.env(), "OUTBOX_JWT_SECRET": secret, "OUTBOX_ROUTER_PORT": str(router_port),
               "OUTBOX_RELAY_HTTP_PORT": str(relay_port), "OUTBOX_CONNECTOR_NAME": CONNECTOR,
               "OUTBOX_SUPERVISE_INTERVAL_S": "1", "OUTBOX_HEARTBEAT_INTERVAL_MS": "1000",
               "OUTBOX_KAFKA_MAX_POLL_INTERVAL_MS": "10000"}  # fmt: skip
        if opts.partitions is not None:
            _print(f"the notification topic has {opts.partitions} partition(s) (--partitions): every fetch "
                   "of a partition costs the embedded broker a walk over all its stored batches "
                   "(docs/operations.md)")  # fmt: skip
        if overrides := demo_connector_overrides(opts.linger_ms):
            env["OUTBOX_CONNECTOR_OVERRIDES"] = json.dumps(overrides)
            _print(f"the connector's producer batches for {opts.linger_ms} ms (--linger-ms; batches of up "
                   f"to {DEMO_BATCH_BYTES // 1024} KB): the embedded broker slows down as record batches "
                   "pile up (docs/operations.md)")  # fmt: skip
        _print(
            "starting the relay (applies and supervises the Debezium connector) and the router..."
        )
        relay = procs.start("relay", ["relay", "run"], env)
        router = procs.start("router", ["router", "run"], env)
        await _wait_relay_healthy(
            f"http://127.0.0.1:{relay_port}/healthz", 120, relay, tmp / "relay.log"
        )
        await _wait_http(
            f"http://127.0.0.1:{router_port}/readyz", 60, "router", router, tmp / "router.log"
        )
        tokens = {t: mint(secret, t, 8 * 3600, now=time.time()) for t in TEACHERS}
        tally = Tally()
        load_since = load_until = 0.0
        per_minute = opts.duration >= 120  # a table of the load's minutes, with the router's stages
        metrics_url = f"http://127.0.0.1:{router_port}/metrics"
        scrapes: list[str | None] = []  # the router's metrics, minute by minute of the load
        scraper: asyncio.Task[None] | None = None
        readies = {t: asyncio.Event() for t in TEACHERS}
        async with asyncio.TaskGroup() as tg:
            clients = [tg.create_task(_client(router_port, tokens[t], t, tally, readies[t], opts.quiet))
                       for t in TEACHERS]  # fmt: skip
            for ev in readies.values():
                await asyncio.wait_for(ev.wait(), 20)
            _print(f"\n{'time':<9} {'teacher':<10} {'priority':<9} {'type':<40} {'commit->frame':>9}"
                   "  <- domain topic of its cause (same transaction)")  # fmt: skip
            with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
                for i, step in enumerate(scenario()):
                    if stop.is_set():
                        break
                    eid, domain_id = await asyncio.to_thread(_commit, conn, step, i)
                    (tally.events_rolled_back if step.rollback else tally.events).add(domain_id)
                    if step.rollback:
                        tally.rolled_back.add(eid)
                        _print(f"{time.strftime('%H:%M:%S')}  {step.teacher:<10} (rolled back: {step.type} "
                               "must never arrive)")  # fmt: skip
                    else:
                        tally.sent[eid] = time.time()
                    await asyncio.sleep(opts.step_delay_s)
                if opts.rate > 0 and opts.duration > 0 and not stop.is_set():
                    _print(f"\nload: {opts.rate:.0f} notifications/s for {opts.duration:.0f} s ...")
                    start = time.monotonic()
                    load_since = time.time()
                    if per_minute:
                        scraper = tg.create_task(_scrape_minutes(metrics_url, load_since, scrapes))
                    committed = 0
                    for i, step in enumerate(_load_steps(opts.rate, opts.duration)):
                        if stop.is_set():
                            break
                        due = start + i / opts.rate
                        if (wait := due - time.monotonic()) > 0:
                            await asyncio.sleep(wait)
                        eid, domain_id = await asyncio.to_thread(_commit, conn, step, 1000 + i)
                        tally.events.add(domain_id)
                        tally.sent[eid] = time.time()
                        committed += 1
                    load_until = time.time()
                    if scraper is not None:
                        scraper.cancel()
                    _print(load_report(opts.rate, committed, time.monotonic() - start))
            await _drain(tally)
            await asyncio.sleep(1.0)  # a rolled-back or duplicate frame would show up now
            _print("\n" + tally.summary())
            if load_since and per_minute:
                async with httpx.AsyncClient(timeout=5) as http:
                    final = await _scrape(http, metrics_url)
                router_stages = minute_stages(scrapes, final, last_minute(load_since, load_until))
                _print("the load, minute by minute (commit -> frame; the router's stages over the "
                       "same minute, as the histogram bucket that holds their p99: ship = Kafka "
                       "record -> router read, route = router read -> frame written, row -> frame = "
                       "the outbox row's created_at -> frame written):")  # fmt: skip
                for line in tally.by_minute(load_since, load_until, router_stages):
                    _print(line)
            shipped = await asyncio.to_thread(_domain_events_on_topics, stack.kafka_bootstrap,
                                              tally.events | tally.events_rolled_back, len(tally.events))  # fmt: skip
            tally.events_shipped = shipped
            _print(f"domain events: published {len(tally.events)}, on their topics "
                   f"{len(shipped & tally.events)}, rolled back and on a topic "
                   f"{len(shipped & tally.events_rolled_back)}")  # fmt: skip
            if tally.rolled_back & set(tally.received):
                _print("ERROR: a rolled-back notification was delivered")
            if tally.wrong_teacher:
                _print(f"ERROR: {tally.wrong_teacher} frames reached the wrong teacher")
            if not opts.serve:
                _print('\nto open the inbox page, keep the pipeline running: '
                       'make demo DEMO_ARGS="--serve"')  # fmt: skip
            else:
                _print(f"\ninbox page: http://127.0.0.1:{router_port}/?token={tokens[TEACHERS[0]]}")
                _print(f"            (other teachers: {', '.join(TEACHERS[1:])}; mint with "
                       f"OUTBOX_JWT_SECRET={secret} outbox token --teacher NAME)")  # fmt: skip
            if opts.serve and not stop.is_set():
                _print("serving until Ctrl-C ...")
                await stop.wait()
            for c in clients:
                c.cancel()
        return 0 if tally.clean else 1
    finally:
        _print("stopping everything the demo started ...")
        procs.stop()
        await asyncio.to_thread(manager.down)
        shutil.rmtree(tmp, ignore_errors=True)
