"""What the sharded fan-out subscriber does with each thing a node says, and
with a node's loss (pure: no Redis; no node connection is touched)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from router.interest import Interest
from router.sharded import ShardedSubscriber, _Node
from router.store import Store


def _subscriber() -> tuple[ShardedSubscriber, list[bytes], list[list[str]]]:
    store = Store.__new__(Store)
    store.prefix = "p"
    dispatched: list[bytes] = []
    restored: list[list[str]] = []

    def on_restored(teachers: Iterable[str] | None) -> None:
        restored.append(sorted(teachers or []))

    sub = ShardedSubscriber(None, store, Interest(), dispatch=dispatched.append,  # type: ignore[arg-type]
                            restored=on_restored, connect=None,  # type: ignore[arg-type]
                            subscribed=asyncio.Event())  # fmt: skip
    return sub, dispatched, restored


def _subscribed(sub: ShardedSubscriber, node: Any, *teachers: str) -> None:
    """As if ``_subscribe`` had sent SSUBSCRIBE for ``teachers`` to ``node``."""
    sub._nodes[node.name] = node
    for t in teachers:
        sub._teacher_of[sub.store.teacher_channel(t).encode()] = t
        sub._node_of[t] = node.name


def _confirm(sub: ShardedSubscriber, node: Any, teacher: str) -> None:
    sub._handle(node, [b"ssubscribe", sub.store.teacher_channel(teacher).encode(), 1])


async def test_a_confirmed_subscription_lets_the_connection_sync() -> None:
    sub, dispatched, restored = _subscriber()
    node: Any = _Node("n1", None, 0.0)  # type: ignore[arg-type]
    fut = sub.interest.acquire("ada")
    assert sub.interest.pending_changes()[0] == ["ada"]
    _subscribed(sub, node, "ada")
    assert not fut.done()
    _confirm(sub, node, "ada")
    assert fut.done() and restored == []  # a first subscription needs no catch-up
    channel = sub.store.teacher_channel("ada").encode()
    sub._handle(node, [b"smessage", channel, b"payload"])
    sub._handle(node, [b"pong", b""])
    sub._handle(node, b"PONG")
    assert dispatched == [b"payload"]


async def test_a_lost_node_costs_only_its_own_teachers_a_catch_up() -> None:
    sub, _, restored = _subscriber()
    n1: Any = _Node("n1", None, 0.0)  # type: ignore[arg-type]
    n2: Any = _Node("n2", None, 0.0)  # type: ignore[arg-type]
    for t in ("ada", "bo", "cy"):
        sub.interest.acquire(t)
    sub.interest.pending_changes()
    _subscribed(sub, n1, "ada", "bo")
    _subscribed(sub, n2, "cy")
    for t, n in (("ada", n1), ("bo", n1), ("cy", n2)):
        _confirm(sub, n, t)
    sub._node_lost(n1, "connection reset")
    sub._node_lost(n1, "the same loss, seen twice")  # handled once
    assert sub.losses == 1 and "n1" not in sub._nodes and "n2" in sub._nodes
    register, _ = sub.interest.pending_changes()
    assert sorted(register) == ["ada", "bo"]  # cy's subscription stands
    _subscribed(sub, n2, "ada", "bo")  # their slots are served by n2 now
    _confirm(sub, n2, "ada")
    _confirm(sub, n2, "bo")
    assert restored == [["ada"], ["bo"]]  # each caught up once it is back; cy never


async def test_an_unsubscription_nobody_asked_for_subscribes_that_teacher_again() -> None:
    sub, _, restored = _subscriber()
    node: Any = _Node("n1", None, 0.0)  # type: ignore[arg-type]
    for t in ("gone", "moved", "stays"):
        sub.interest.acquire(t)
    sub.interest.pending_changes()
    _subscribed(sub, node, "gone", "moved", "stays")
    for t in ("gone", "moved", "stays"):
        _confirm(sub, node, t)
    sub.interest.release("gone")
    asked = sub.store.teacher_channel("gone").encode()
    sub._dropping.add(asked)
    sub._handle(node, [b"sunsubscribe", asked, 2])  # asked for: nothing to do
    assert sub.losses == 0
    sub._handle(node, [b"sunsubscribe", sub.store.teacher_channel("moved").encode(), 1])
    assert sub.losses == 1 and sub._refresh
    register, _ = sub.interest.pending_changes()
    assert register == ["moved"]
    _subscribed(sub, node, "moved")
    _confirm(sub, node, "moved")
    assert restored == [["moved"]]


class _Conn:
    """A node connection that records what is sent to it."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.closed = False

    def pack_command(self, *args: Any) -> tuple[Any, ...]:
        return args

    async def send_packed_command(self, packed: tuple[Any, ...], check_health: bool = True) -> None:
        self.sent.append(packed)

    async def disconnect(self) -> None:
        self.closed = True


async def test_a_node_silent_for_three_pings_is_given_up_on() -> None:
    """A hung or cut-off node closes nothing; having said nothing for three ping
    intervals (10 s each by default) is what gives it away."""
    sub, _, _ = _subscriber()
    now = asyncio.get_running_loop().time()
    quiet, talking = _Conn(), _Conn()
    n1: Any = _Node("n1", quiet, now - 31)  # type: ignore[arg-type]
    n2: Any = _Node("n2", talking, now - 29)  # type: ignore[arg-type]
    for t in ("ada", "cy"):
        sub.interest.acquire(t)
    sub.interest.pending_changes()
    _subscribed(sub, n1, "ada")
    _subscribed(sub, n2, "cy")
    _confirm(sub, n1, "ada")
    _confirm(sub, n2, "cy")
    await sub._ping_all()
    assert "n1" not in sub._nodes and quiet.closed and quiet.sent == []
    assert "n2" in sub._nodes and talking.sent == [("PING",)] and not talking.closed
    assert sub.losses == 1
    assert sub.interest.pending_changes()[0] == ["ada"]  # only ada subscribes again
