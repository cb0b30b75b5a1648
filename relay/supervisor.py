"""The supervisor's decision core (pure): desired config + observed connector
status + slot stats in, actions and a report out.

Rules:
  * Connect unreachable, or answering with an error (a 409 during a worker
    rebalance, a 500, a body that is not Connect's): no action; report
    UNHEALTHY (the loop backs off). Nothing Connect answers ends the daemon.
  * Connector missing: create it.
  * Live config differs from the desired one: re-apply.
  * Paused or stopped (by an operator): leave it so; report PAUSED / STOPPED.
  * Connector or tasks FAILED: restart only the failed ones, with exponential
    backoff and a cap on attempts; past the cap give up and report DEGRADED
    with the trace's first line until the cause is fixed.
  * Everything RUNNING: HEALTHY. The restart budget resets only once it has
    stayed RUNNING for the stability window: a task that fails again a few
    seconds after each restart uses the budget up instead of restarting forever.
    After giving up, a task RUNNING again stays DEGRADED until it is stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from relay.connect_api import ConnectorStatus
from relay.connector_config import diff
from relay.slot_health import Level, SlotAssessment


class Health(StrEnum):
    HEALTHY = "healthy"
    STARTING = "starting"
    DEGRADED = "degraded"
    PAUSED = "paused"
    STOPPED = "stopped"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class Create:
    config: dict[str, str]


@dataclass(frozen=True)
class Reapply:
    config: dict[str, str]
    changed_keys: list[str]


@dataclass(frozen=True)
class RestartFailed:
    connector_failed: bool
    task_ids: list[int]


Action = Create | Reapply | RestartFailed


@dataclass(frozen=True)
class Observation:
    reachable: bool
    live_config: dict[str, str] | None = None
    status: ConnectorStatus | None = None
    slot: SlotAssessment | None = None
    unreachable_reason: str | None = None
    api_error: str | None = None  # Connect answered, but not with what we asked for


@dataclass(frozen=True)
class Policy:
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 300.0
    max_restarts: int = 5
    stable_after_s: float = 60.0


@dataclass(frozen=True)
class Memory:
    """What the supervisor remembers between ticks."""

    restarts: int = 0  # consecutive: since the last stable RUNNING
    total_restarts: int = 0
    next_restart_at: float = 0.0
    backoff_s: float = 0.0
    running_since: float | None = None  # all RUNNING since (None: not now)
    gave_up: bool = False
    last_failure: str = ""  # first line of the last trace seen


@dataclass(frozen=True)
class Report:
    health: Health
    message: str
    details: list[str] = field(default_factory=list)


def shorten(trace: str | None, lines: int = 4, width: int = 300) -> str:
    """The first lines of a Java stack trace: enough to see the cause."""
    if not trace:
        return ""
    kept = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()][:lines]
    caused = [ln.strip() for ln in trace.splitlines() if ln.strip().startswith("Caused by:")]
    if caused and caused[-1] not in kept:
        kept.append(caused[-1])
    return " | ".join(k[:width] for k in kept)


def first_line(trace: str | None, width: int = 400) -> str:
    """The first line of a Java stack trace (the exception and its message) and,
    when it wraps another, the root cause: what an operator needs to see."""
    if not trace:
        return ""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    caused = [ln.removeprefix("Caused by: ") for ln in lines if ln.startswith("Caused by:")]
    out = lines[0] if not caused else f"{lines[0]}; caused by {caused[-1]}"
    return out[:width]


def decide(desired: dict[str, str], obs: Observation, mem: Memory, policy: Policy,
           now: float) -> tuple[list[Action], Memory, Report]:  # fmt: skip
    if not obs.reachable:
        return (
            [],
            mem,
            Report(Health.UNHEALTHY, f"Kafka Connect unreachable: {obs.unreachable_reason}"),
        )
    if obs.api_error is not None:
        return [], mem, Report(Health.UNHEALTHY, f"Kafka Connect answered with an error; "
                               f"retrying: {obs.api_error}")  # fmt: skip
    slot_details = list(obs.slot.problems) if obs.slot else []
    if obs.live_config is None:
        return (
            [Create(desired)],
            mem,
            Report(Health.STARTING, "connector missing; creating it", slot_details),
        )
    actions: list[Action] = []
    changed = diff(obs.live_config, desired)
    if changed:
        actions.append(Reapply(desired, [k for k, _, _ in changed]))
    st = obs.status
    if st is None or (st.state in ("RUNNING", "UNASSIGNED") and not st.tasks):
        return actions, mem, Report(Health.STARTING, "connector starting", slot_details)
    if st.state == "PAUSED":
        return actions, mem, Report(Health.PAUSED, "connector paused by an operator; "
                                    "`outbox connector resume` resumes it", slot_details)  # fmt: skip
    if st.state == "STOPPED":
        return actions, mem, Report(Health.STOPPED, "connector stopped by an operator; "
                                    "`outbox connector resume` starts it", slot_details)  # fmt: skip
    failed_tasks = [t.id for t in st.tasks if t.state == "FAILED"]
    connector_failed = st.state == "FAILED"
    if not failed_tasks and not connector_failed:
        health = Health.HEALTHY
        if obs.slot and obs.slot.level is not Level.OK:
            health = Health.DEGRADED if obs.slot.level is Level.CRITICAL else Health.HEALTHY
        running = all(t.state == "RUNNING" for t in st.tasks)
        if not running:
            return actions, replace(mem, running_since=None), Report(health, "tasks restarting",
                                                                     slot_details)  # fmt: skip
        since = mem.running_since if mem.running_since is not None else now
        stable = now - since >= policy.stable_after_s
        if stable:
            new_mem = replace(mem, restarts=0, backoff_s=0.0, next_restart_at=0.0,
                              running_since=since, gave_up=False)  # fmt: skip
            return actions, new_mem, Report(health, "connector and tasks running", slot_details)
        new_mem = replace(mem, running_since=since)
        if mem.gave_up:
            return actions, new_mem, Report(
                Health.DEGRADED,
                f"running again after giving up ({mem.last_failure}); healthy once it has run "
                f"{policy.stable_after_s:.0f} s", slot_details)  # fmt: skip
        msg = "connector and tasks running"
        if mem.restarts:
            msg += (f" (after restart {mem.restarts}/{policy.max_restarts}; the budget resets "
                    f"after {policy.stable_after_s:.0f} s running)")  # fmt: skip
        return actions, new_mem, Report(health, msg, slot_details)
    traces = [shorten(st.trace)] if connector_failed and st.trace else []
    traces += [
        f"task {t.id}: {shorten(t.trace)}" for t in st.tasks if t.state == "FAILED" and t.trace
    ]
    first = first_line(st.trace if connector_failed and st.trace else next(
        (t.trace for t in st.tasks if t.state == "FAILED" and t.trace), None))  # fmt: skip
    mem = replace(mem, running_since=None, last_failure=first or mem.last_failure)
    if mem.restarts >= policy.max_restarts:
        return (
            actions,
            replace(mem, gave_up=True),
            Report(
                Health.DEGRADED,
                f"gave up after {mem.restarts} restarts: {mem.last_failure or 'no trace'}; "
                "fix the cause, then `outbox connector restart` (`outbox doctor` explains "
                "known causes)",
                traces + slot_details,
            ),
        )
    if now < mem.next_restart_at:
        return (
            actions,
            mem,
            Report(
                Health.DEGRADED,
                f"failed; next restart in {mem.next_restart_at - now:.0f} s",
                traces + slot_details,
            ),
        )
    backoff = (
        policy.backoff_initial_s
        if mem.backoff_s == 0
        else min(mem.backoff_s * 2, policy.backoff_max_s)
    )
    new_mem = replace(mem, restarts=mem.restarts + 1, total_restarts=mem.total_restarts + 1,
                      next_restart_at=now + backoff, backoff_s=backoff)  # fmt: skip
    actions.append(RestartFailed(connector_failed, failed_tasks))
    what = ("connector and " if connector_failed else "") + f"tasks {failed_tasks}"
    return (
        actions,
        new_mem,
        Report(
            Health.DEGRADED,
            f"{what} FAILED ({first or 'no trace'}); restart {new_mem.restarts}/"
            f"{policy.max_restarts}",
            traces + slot_details,
        ),
    )


def task_moves(before: dict[int, str], status: ConnectorStatus | None
               ) -> tuple[dict[int, str], list[tuple[int, str, str]]]:  # fmt: skip
    """Which tasks run on another worker than when last seen (a worker of the
    Connect cluster left, or the group rebalanced): the new map of task id ->
    worker, and ``(task, from, to)`` for each move."""
    if status is None:
        return before, []
    now = {t.id: t.worker_id for t in status.tasks if t.worker_id and t.state == "RUNNING"}
    moves = [(tid, before[tid], w) for tid, w in now.items() if tid in before and before[tid] != w]
    return {**before, **now}, moves
