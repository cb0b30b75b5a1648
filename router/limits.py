"""Rate limits (pure): a token bucket, budgets by teacher (the frames a
teacher's connections send and have replayed), and a throttle for log lines a
flood of clients could otherwise repeat thousands of times."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: int
    _tokens: float = field(init=False)
    _at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)

    def allow(self, now: float) -> bool:
        """Take one token at time ``now`` (seconds); False when none is left."""
        return self.take(1, now)

    def take(self, cost: float, now: float) -> bool:
        """Take ``cost`` tokens at ``now``, or none and False if there are fewer."""
        if self.level(now) >= cost:
            self._tokens -= cost
            return True
        return False

    def spend(self, cost: float, now: float) -> None:
        """Take ``cost`` tokens at ``now`` even if there are fewer: the bucket
        goes into debt, which the refill pays back first."""
        self.level(now)
        self._tokens -= cost

    def level(self, now: float) -> float:
        """The tokens there are at ``now`` (below zero: a debt)."""
        if self._at is not None:
            self._tokens = min(
                self.burst, self._tokens + max(0.0, now - self._at) * self.rate_per_s
            )
        self._at = now if self._at is None else max(self._at, now)
        return self._tokens


@dataclass
class TeacherBudgets:
    """A token bucket per teacher: what all of a teacher's connections here may
    spend together (frames replayed by syncs, frames sent by the client),
    ``rate_per_s`` a second with ``burst`` at once. A budget is kept when the
    connections close, so reconnecting does not buy a new one.

    A budget that has refilled to its burst is the same as a new one and is
    dropped, so what is kept is bounded by the teachers that spent within the
    last ``burst / rate_per_s`` seconds."""

    rate_per_s: float
    burst: int
    _by_teacher: dict[str, TokenBucket] = field(default_factory=dict, init=False)
    _sweep_at: int = field(default=1024, init=False)

    def _bucket(self, teacher: str, now: float) -> TokenBucket:
        b = self._by_teacher.get(teacher)
        if b is None:
            if len(self._by_teacher) >= self._sweep_at:
                self._sweep(now)
            b = self._by_teacher[teacher] = TokenBucket(self.rate_per_s, self.burst)
        return b

    def _sweep(self, now: float) -> None:
        """Drop the budgets that are full again at ``now``."""
        self._by_teacher = {t: b for t, b in self._by_teacher.items() if b.level(now) < b.burst}
        self._sweep_at = max(1024, 2 * len(self._by_teacher))

    def level(self, teacher: str, now: float) -> float:
        """What ``teacher`` has left at ``now`` (below zero: overdrawn)."""
        b = self._by_teacher.get(teacher)
        return float(self.burst) if b is None else b.level(now)

    def take(self, teacher: str, cost: float, now: float) -> bool:
        """Take ``cost`` from ``teacher``'s budget, or nothing and False if less is left."""
        if cost <= 0:
            return True
        return self._bucket(teacher, now).take(cost, now)

    def spend(self, teacher: str, cost: float, now: float) -> None:
        """Charge ``cost`` to ``teacher``'s budget, into debt if need be."""
        if cost > 0:
            self._bucket(teacher, now).spend(cost, now)

    def wait_s(self, teacher: str, now: float) -> float:
        """Seconds until ``teacher``'s budget holds one again (0 if it is above zero)."""
        left = self.level(teacher, now)
        return 0.0 if left > 0 else (1 - left) / self.rate_per_s

    def __len__(self) -> int:
        return len(self._by_teacher)


@dataclass
class LogThrottle:
    """At most one line per ``interval_s`` for each kind of event, with a count."""

    interval_s: float = 60.0
    _seen: dict[str, tuple[int, float]] = field(default_factory=dict)

    def hit(self, what: str, now: float) -> int | None:
        """Count one ``what`` at ``now``; how many to report if a line is due, else None."""
        count, last = self._seen.get(what, (0, now - self.interval_s))
        if now - last >= self.interval_s:
            self._seen[what] = (0, now)
            return count + 1
        self._seen[what] = (count + 1, last)
        return None
