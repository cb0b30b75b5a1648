"""The dev stack's Redis Cluster on real redis-server processes: a port taken
between its check and the node's bind is not a failed start."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from stack import procs
from stack.manager import StackManager
from stack.settings import StackSettings


def test_a_cluster_node_whose_port_was_taken_meanwhile_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stack.manager")
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen()
    taken = held.getsockname()[1]
    real = procs.free_port_pair
    first = iter([taken])  # the first node is offered the port someone holds
    monkeypatch.setattr(procs, "free_port_pair", lambda: next(first, None) or real())
    manager = StackManager(StackSettings(), state_dir=tmp_path / "state")
    try:
        nodes = manager.start_redis_cluster(primaries=3, replicas=0)
        assert len(nodes) == 3 and taken not in {n.port for n in nodes}
        assert [n.name for n in nodes] == ["redis-cluster-0", "redis-cluster-1", "redis-cluster-2"]
        assert f"port {taken} was taken meanwhile" in caplog.text
    finally:
        manager.stop_started()
        held.close()


def test_cluster_ports_are_below_the_ephemeral_range() -> None:
    first, _ = procs.ephemeral_ports()
    for _ in range(20):
        port = procs.free_port_pair()
        assert port + 10000 < first
