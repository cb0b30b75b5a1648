"""bench.e2e's config labels (pure)."""

from __future__ import annotations

import pytest

from bench.e2e import DEFAULTS, default_base, overrides, partitions


def test_labels_name_connector_overrides_and_partitions() -> None:
    assert overrides("tuned") == {}
    assert overrides("default") == DEFAULTS
    assert overrides("linger5+batch524288") == {
        "producer.override.linger.ms": "5",
        "producer.override.batch.size": "524288",
    }
    assert overrides("parts1") == {} and overrides("linger5+parts1") == {
        "producer.override.linger.ms": "5"
    }
    assert partitions("linger5+parts1", 6) == 1
    assert partitions("parts12", 6) == 12
    assert partitions("tuned", 6) == 6


@pytest.mark.parametrize("label", ["parts0", "partsX", "fast", "linger"])
def test_an_unknown_label_stops_with_the_labels_it_knows(label: str) -> None:
    with pytest.raises(SystemExit, match="partsN"):
        overrides(label)


def test_a_default_config_is_compared_with_ours_on_the_same_topic() -> None:
    assert default_base("default") == "tuned"
    assert default_base("default+parts1") == "parts1"
    assert default_base("parts1") is None
