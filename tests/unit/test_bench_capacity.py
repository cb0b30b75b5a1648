"""bench.capacity reads the latest results, and says what to run when one lacks a figure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.capacity import RESULTS, load_units


def test_the_committed_results_give_every_unit_cost() -> None:
    u = load_units(RESULTS)
    assert u.own_s > 0 and u.conn_bytes > 0 and u.redis_bytes_out > 0


def test_a_router_result_without_idle_connections_names_what_to_run(tmp_path: Path) -> None:
    shutil.copy(RESULTS / "fanout.json", tmp_path / "fanout.json")
    router = json.loads((RESULTS / "router.json").read_text())
    router.pop("idle")
    (tmp_path / "router.json").write_text(json.dumps(router))
    with pytest.raises(SystemExit, match="--idle"):
        load_units(tmp_path)
