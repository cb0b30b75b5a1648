"""Interest fan-out bookkeeping (router/interest.py): a connection's future
resolves only once the subscription that carries its teacher's next
notifications is confirmed."""

from __future__ import annotations

import asyncio

from router.interest import Interest


def make() -> Interest:
    return Interest(lambda t: f"ch:{t}")


async def test_first_connection_subscribes_and_waits_for_the_confirmation() -> None:
    i = make()
    fut = i.acquire("ada")
    assert not fut.done() and i.wake.is_set()
    assert i.pending_changes() == (["ch:ada"], [])
    assert not fut.done()  # sent, not confirmed
    i.subscribe_confirmed("ch:ada")
    assert fut.done()
    second = i.acquire("ada")  # already subscribed: at once, nothing to send
    assert second.done() and i.pending_changes() == ([], [])


async def test_the_last_one_leaving_unsubscribes_once() -> None:
    i = make()
    a, b = i.acquire("ada"), i.acquire("ada")
    i.pending_changes()
    i.subscribe_confirmed("ch:ada")
    i.release("ada")
    assert i.pending_changes() == ([], [])
    i.release("ada")
    assert i.pending_changes() == ([], ["ch:ada"])
    assert a.done() and b.done() and i.channels == 0


async def test_leaving_and_coming_back_before_anything_was_sent_changes_nothing() -> None:
    i = make()
    i.acquire("ada")
    i.pending_changes()
    i.subscribe_confirmed("ch:ada")
    i.release("ada")
    again = i.acquire("ada")
    assert again.done()  # still subscribed: the unsubscribe never went out
    assert i.pending_changes() == ([], [])


async def test_a_subscribe_after_an_unsubscribe_counts_only_when_its_own_answer_comes() -> None:
    """SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE in flight: the first confirmation is not
    the one the new connection needs (between the two, the channel was off)."""
    i = make()
    i.acquire("ada")
    i.pending_changes()  # SUBSCRIBE 1
    i.release("ada")
    assert i.pending_changes() == ([], ["ch:ada"])  # UNSUBSCRIBE
    fut = i.acquire("ada")
    assert i.pending_changes() == (["ch:ada"], [])  # SUBSCRIBE 2
    i.subscribe_confirmed("ch:ada")  # the answer to SUBSCRIBE 1
    assert not fut.done()
    i.subscribe_confirmed("ch:ada")  # the answer to SUBSCRIBE 2
    assert fut.done()


async def test_a_lost_connection_subscribes_everything_again() -> None:
    i = make()
    for t in ("ada", "bo"):
        i.acquire(t)
    i.pending_changes()
    for t in ("ada", "bo"):
        i.subscribe_confirmed(f"ch:{t}")
    assert i.all_confirmed()
    i.lost()
    assert not i.all_confirmed() and i.wake.is_set()
    late = i.acquire("cy")
    sub, unsub = i.pending_changes()
    assert sorted(sub) == ["ch:ada", "ch:bo", "ch:cy"] and unsub == []
    for ch in sub:
        i.subscribe_confirmed(ch)
    assert i.all_confirmed() and late.done()


async def test_a_connection_gone_before_its_confirmation_is_cancelled() -> None:
    i = make()
    fut = i.acquire("ada")
    i.release("ada")
    await asyncio.sleep(0)
    assert fut.cancelled()
