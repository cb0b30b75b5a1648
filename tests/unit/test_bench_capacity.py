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
    assert u.cluster is not None
    assert u.cluster.primary_s > 0 and u.cluster.sharded_own_s > 0


def test_no_cluster_result_sizes_by_one_redis_and_says_so(tmp_path: Path) -> None:
    from bench.capacity import table

    for name in ("fanout.json", "router.json"):
        shutil.copy(RESULTS / name, tmp_path / name)
    u = load_units(tmp_path)
    assert u.cluster is None
    assert "No cluster was measured" in table(u)


def test_a_cluster_result_without_the_primaries_cpu_names_what_to_run(tmp_path: Path) -> None:
    for name in ("fanout.json", "router.json"):
        shutil.copy(RESULTS / name, tmp_path / name)
    cluster = json.loads((RESULTS / "fanout-cluster.json").read_text())
    for run in cluster["raw"]["broadcast x1"]:
        run.pop("redis_primary_cpu_s", None)
    (tmp_path / "fanout-cluster.json").write_text(json.dumps(cluster))
    with pytest.raises(SystemExit, match="--redis cluster"):
        load_units(tmp_path)


def test_a_router_result_without_idle_connections_names_what_to_run(tmp_path: Path) -> None:
    shutil.copy(RESULTS / "fanout.json", tmp_path / "fanout.json")
    router = json.loads((RESULTS / "router.json").read_text())
    router.pop("idle")
    (tmp_path / "router.json").write_text(json.dumps(router))
    with pytest.raises(SystemExit, match="--idle"):
        load_units(tmp_path)
