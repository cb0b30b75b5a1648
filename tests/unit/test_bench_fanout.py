"""bench.fanout's per-notification costs (pure)."""

from __future__ import annotations

import pytest

from bench.fanout import unit_costs_us


def test_the_ratio_to_broadcast_is_own_over_own_plus_foreign() -> None:
    broadcast, sharded = [3.3, 3.2, 3.0], [2.6, 2.5, 2.6]
    u = unit_costs_us(broadcast, sharded, 100_000)
    assert u["own"] == pytest.approx(2.5667 / (100_000 / 3) * 1e6, rel=1e-3)  # 77 us
    ratio = sum(sharded) / sum(broadcast)
    assert u["own"] / (u["own"] + 2 * u["foreign"]) == pytest.approx(ratio)
    assert u["own_needed_for_half"] == pytest.approx(2 * u["foreign"])
    assert u["own"] > u["own_needed_for_half"] and ratio > 0.5


def test_half_of_broadcast_exactly_when_own_is_at_the_bound() -> None:
    # 4 replicas; the mode spends half of broadcast's per replica
    u = unit_costs_us([2.0] * 4, [1.0] * 4, 40_000)
    assert u["own"] == pytest.approx(u["own_needed_for_half"])


@pytest.mark.parametrize(("b", "m"), [([1.0], [1.0]), ([1.0, 1.0], [1.0, 1.0, 1.0])])
def test_refuses_one_replica_or_unequal_runs(b: list[float], m: list[float]) -> None:
    with pytest.raises(ValueError, match="two or more replicas"):
        unit_costs_us(b, m, 1000)
