"""What the sharded fan-out subscriber does with each thing a node says (pure:
no Redis; the node connection is never touched)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router.interest import Interest
from router.sharded import ShardedSubscriber, SubscriptionLost, _Node
from router.store import Store


def _subscriber() -> tuple[ShardedSubscriber, list[bytes], list[int]]:
    store = Store.__new__(Store)
    store.prefix = "p"
    dispatched: list[bytes] = []
    restored: list[int] = []
    sub = ShardedSubscriber(None, store, Interest(), dispatch=dispatched.append,  # type: ignore[arg-type]
                            restored=lambda: restored.append(1), connect=None,  # type: ignore[arg-type]
                            subscribed=asyncio.Event())  # fmt: skip
    return sub, dispatched, restored


async def test_a_confirmed_subscription_lets_the_connection_sync() -> None:
    sub, dispatched, _ = _subscriber()
    node: Any = _Node("n", None)  # type: ignore[arg-type]
    fut = sub.interest.acquire("ada")
    register, _ = sub.interest.pending_changes()
    assert register == ["ada"]
    channel = sub.store.teacher_channel("ada").encode()
    sub._teacher_of[channel] = "ada"
    assert not fut.done()
    sub._handle(node, [b"ssubscribe", channel, 1])
    assert fut.done()
    sub._handle(node, [b"smessage", channel, b"payload"])
    sub._handle(node, [b"pong", b""])
    sub._handle(node, b"PONG")
    assert dispatched == [b"payload"]


async def test_after_a_loss_connections_catch_up_once_every_teacher_is_back() -> None:
    sub, _, restored = _subscriber()
    node: Any = _Node("n", None)  # type: ignore[arg-type]
    for t in ("ada", "bo"):
        sub.interest.acquire(t)
        sub._teacher_of[sub.store.teacher_channel(t).encode()] = t
    sub.interest.lost()
    sub.interest.pending_changes()
    sub._handle(node, [b"ssubscribe", sub.store.teacher_channel("ada").encode(), 1])
    assert restored == []  # bo is not back yet
    sub._handle(node, [b"ssubscribe", sub.store.teacher_channel("bo").encode(), 2])
    assert restored == [1]


async def test_an_unsubscription_nobody_asked_for_ends_the_session() -> None:
    sub, _, _ = _subscriber()
    node: Any = _Node("n", None)  # type: ignore[arg-type]
    sub._lost = asyncio.get_running_loop().create_future()
    asked = sub.store.teacher_channel("gone").encode()
    sub._dropping.add(asked)
    sub._handle(node, [b"sunsubscribe", asked, 0])  # we asked: fine
    assert not sub._lost.done()
    sub._handle(node, [b"sunsubscribe", sub.store.teacher_channel("moved").encode(), 0])
    with pytest.raises(SubscriptionLost, match="ended the subscription"):
        sub._lost.result()
