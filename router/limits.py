"""Rate limits (pure): a token bucket for per-connection messages, and a
throttle for log lines a flood of clients could otherwise repeat thousands of
times."""

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
        if self._at is not None:
            self._tokens = min(
                self.burst, self._tokens + max(0.0, now - self._at) * self.rate_per_s
            )
        self._at = now if self._at is None else max(self._at, now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


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
