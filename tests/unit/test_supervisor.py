"""The supervisor's decision core, table-driven (pure)."""

from __future__ import annotations

import pytest

from relay.connect_api import ConnectorStatus, TaskStatus
from relay.slot_health import Level, SlotAssessment
from relay.supervisor import (
    Create,
    Health,
    Memory,
    Observation,
    Policy,
    Reapply,
    RestartFailed,
    decide,
    shorten,
)

DESIRED = {"connector.class": "X", "poll.interval.ms": "5"}
LIVE = {**DESIRED, "name": "c"}
POLICY = Policy(backoff_initial_s=5, backoff_max_s=40, max_restarts=3)


def status(state: str = "RUNNING", *tasks: str, trace: str | None = None) -> ConnectorStatus:
    return ConnectorStatus("c", state, "w", [TaskStatus(i, s, "w", trace if s == "FAILED" else None)
                                              for i, s in enumerate(tasks)])  # fmt: skip


CASES = [
    ("unreachable", Observation(False, unreachable_reason="refused"), Memory(), [], Health.UNHEALTHY),
    ("missing", Observation(True, None), Memory(), [Create], Health.STARTING),
    ("running", Observation(True, LIVE, status("RUNNING", "RUNNING")), Memory(), [], Health.HEALTHY),
    ("drift", Observation(True, {**LIVE, "poll.interval.ms": "500"}, status("RUNNING", "RUNNING")), Memory(),
     [Reapply], Health.HEALTHY),
    ("no tasks yet", Observation(True, LIVE, status("RUNNING")), Memory(), [], Health.STARTING),
    ("paused", Observation(True, LIVE, status("PAUSED", "PAUSED")), Memory(), [], Health.PAUSED),
    ("stopped", Observation(True, LIVE, status("STOPPED")), Memory(), [], Health.STOPPED),
    ("task failed", Observation(True, LIVE, status("RUNNING", "FAILED", trace="boom")), Memory(),
     [RestartFailed], Health.DEGRADED),
    ("connector failed", Observation(True, LIVE, status("FAILED", trace="x")), Memory(), [RestartFailed],
     Health.DEGRADED),
    ("backoff pending", Observation(True, LIVE, status("RUNNING", "FAILED")),
     Memory(restarts=1, next_restart_at=1000.0, backoff_s=5), [], Health.DEGRADED),
    ("cap reached", Observation(True, LIVE, status("RUNNING", "FAILED")), Memory(restarts=3), [],
     Health.DEGRADED),
    ("critical slot", Observation(True, LIVE, status("RUNNING", "RUNNING"),
                                  SlotAssessment(Level.CRITICAL, ["full"])), Memory(), [], Health.DEGRADED),
]  # fmt: skip


@pytest.mark.parametrize(
    ("obs", "mem", "kinds", "health"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(obs: Observation, mem: Memory, kinds: list[type], health: Health) -> None:
    actions, _, report = decide(DESIRED, obs, mem, POLICY, now=100.0)
    assert [type(a) for a in actions] == kinds
    assert report.health is health
    assert report.message


def test_restart_only_failed_tasks_with_exponential_backoff_and_cap() -> None:
    obs = Observation(
        True,
        LIVE,
        status("RUNNING", "RUNNING", "FAILED", trace="java.lang.X: no\n\tat a\nCaused by: y"),
    )
    mem, now, seen = Memory(), 0.0, []
    for _ in range(10):
        actions, mem, report = decide(DESIRED, obs, mem, POLICY, now)
        if actions:
            (a,) = actions
            assert isinstance(a, RestartFailed) and a.task_ids == [1] and not a.connector_failed
            seen.append(mem.backoff_s)
        now = mem.next_restart_at
    assert seen == [5, 10, 20]
    assert mem.total_restarts == 3
    assert "gave up after 3 restarts: java.lang.X: no" in report.message
    assert any("Caused by: y" in d for d in report.details)


def test_recovery_resets_the_budget_only_after_the_stability_window() -> None:
    obs = Observation(True, LIVE, status("RUNNING", "RUNNING"))
    _, mem, report = decide(DESIRED, obs, Memory(restarts=2, total_restarts=2, backoff_s=20),
                            POLICY, 0)  # fmt: skip
    assert (mem.restarts, mem.backoff_s) == (2, 20)  # running, but not yet for long
    assert report.health is Health.HEALTHY and "budget resets after 60 s" in report.message
    _, mem, report = decide(DESIRED, obs, mem, POLICY, 59)
    assert mem.restarts == 2
    _, mem, report = decide(DESIRED, obs, mem, POLICY, 60)
    assert (mem.restarts, mem.backoff_s, mem.total_restarts) == (0, 0, 2)
    assert report.message == "connector and tasks running"


def test_a_task_that_fails_soon_after_each_restart_uses_the_budget_up() -> None:
    """Before the window, "restart 1/5" repeated forever: the task was RUNNING for
    a moment after each restart, which reset the budget."""
    failed = Observation(
        True, LIVE, status("RUNNING", "FAILED", trace="org.X: RecordTooLarge\n\tat a")
    )
    running = Observation(True, LIVE, status("RUNNING", "RUNNING"))
    mem, now, healths = Memory(), 0.0, []
    for _ in range(8):
        actions, mem, report = decide(DESIRED, failed, mem, POLICY, now)
        healths.append(report.health)
        now = max(now + 1, mem.next_restart_at)
        _, mem, report = decide(DESIRED, running, mem, POLICY, now)  # up for 2 s only
        healths.append(report.health)
        now += 2
    _, mem, report = decide(DESIRED, failed, mem, POLICY, now)
    assert mem.gave_up and mem.total_restarts == 3
    assert report.health is Health.DEGRADED
    assert report.message.startswith("gave up after 3 restarts: org.X: RecordTooLarge")
    # Once it gave up, running again is not "healthy" until it has been stable.
    _, mem, report = decide(DESIRED, running, mem, POLICY, now + 1)
    assert report.health is Health.DEGRADED and "running again after giving up" in report.message
    _, mem, report = decide(DESIRED, running, mem, POLICY, now + 61)
    assert report.health is Health.HEALTHY and not mem.gave_up and mem.restarts == 0


def test_an_error_answer_is_unhealthy_and_changes_nothing() -> None:
    obs = Observation(True, api_error="Kafka Connect answered 409: rebalance in progress")
    actions, mem, report = decide(DESIRED, obs, Memory(restarts=1), POLICY, 0)
    assert actions == [] and mem == Memory(restarts=1)
    assert report.health is Health.UNHEALTHY and "409" in report.message


def test_shorten() -> None:
    t = "org.X: top\n\tat a.b(C.java:1)\n\tat c\n\tat d\n\tat e\nCaused by: org.postgresql.util.PSQLException: FATAL"
    s = shorten(t)
    assert s.startswith("org.X: top")
    assert s.endswith("Caused by: org.postgresql.util.PSQLException: FATAL")
    assert shorten(None) == ""
