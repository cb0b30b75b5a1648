"""A token bucket for per-connection message rate limits (pure)."""

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
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False
