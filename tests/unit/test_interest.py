"""Interest fan-out bookkeeping (router/interest.py): a connection's future
resolves only once Redis has answered the registration that makes its
teacher's next notifications reach this replica."""

from __future__ import annotations

import asyncio

from router.interest import Interest


async def test_first_connection_registers_and_waits_for_the_answer() -> None:
    i = Interest()
    fut = i.acquire("ada")
    assert not fut.done() and i.wake.is_set()
    assert i.pending_changes() == (["ada"], [])
    assert not fut.done()  # sent, not answered
    i.registered(["ada"])
    assert fut.done()
    second = i.acquire("ada")  # already registered: at once, nothing to send
    assert second.done() and i.pending_changes() == ([], [])


async def test_many_arrivals_go_in_one_round() -> None:
    i = Interest()
    futs = [i.acquire(t) for t in ("ada", "bo", "cy")]
    register, withdraw = i.pending_changes()
    assert sorted(register) == ["ada", "bo", "cy"] and withdraw == []
    i.registered(register)
    assert all(f.done() for f in futs)


async def test_the_last_one_leaving_withdraws_once() -> None:
    i = Interest()
    a, b = i.acquire("ada"), i.acquire("ada")
    i.registered(i.pending_changes()[0])
    i.release("ada")
    assert i.pending_changes() == ([], [])
    i.release("ada")
    assert i.pending_changes() == ([], ["ada"])
    assert a.done() and b.done() and i.teachers == 0
    assert i.renewals() == []


async def test_leaving_and_coming_back_before_anything_was_sent_changes_nothing() -> None:
    i = Interest()
    i.acquire("ada")
    i.registered(i.pending_changes()[0])
    i.release("ada")
    again = i.acquire("ada")
    assert again.done()  # still registered: the withdrawal never went out
    assert i.pending_changes() == ([], [])


async def test_coming_back_while_the_withdrawal_is_sent_waits_for_a_new_registration() -> None:
    """Withdrawn, then wanted again: the old registration's answer is not the one
    the new connection needs (between the two, this replica was not registered)."""
    i = Interest()
    i.acquire("ada")
    i.registered(i.pending_changes()[0])
    i.release("ada")
    assert i.pending_changes() == ([], ["ada"])  # the withdrawal is being sent
    fut = i.acquire("ada")
    assert not fut.done() and i.wake.is_set()
    assert i.pending_changes() == (["ada"], [])  # the next round registers again
    assert not fut.done()
    i.registered(["ada"])
    assert fut.done()


async def test_leaving_while_the_registration_is_sent_then_coming_back() -> None:
    """Registration in flight, the connection leaves and another comes: the
    registration in flight is the one that counts (no withdrawal was sent)."""
    i = Interest()
    i.acquire("ada")
    sent = i.pending_changes()[0]
    i.release("ada")
    fut = i.acquire("ada")
    assert not fut.done()  # not answered yet
    i.registered(sent)
    assert fut.done() and i.pending_changes() == ([], [])


async def test_a_failed_registration_is_sent_again_and_the_connection_keeps_waiting() -> None:
    i = Interest()
    fut = i.acquire("ada")
    sent = i.pending_changes()[0]
    i.failed(sent)
    assert not fut.done() and i.wake.is_set()
    assert i.pending_changes() == (["ada"], [])
    i.registered(["ada"])
    assert fut.done()


async def test_a_loss_registers_everything_again_and_resyncs_once_all_is_back() -> None:
    i = Interest()
    for t in ("ada", "bo"):
        i.acquire(t)
    i.registered(i.pending_changes()[0])
    assert not i.take_resync()  # nothing was lost
    i.lost()
    assert i.wake.is_set() and not i.take_resync()
    late = i.acquire("cy")
    register, withdraw = i.pending_changes()
    assert sorted(register) == ["ada", "bo", "cy"] and withdraw == []
    assert not i.take_resync()  # not answered yet
    i.registered(register)
    assert late.done()
    assert i.take_resync() and not i.take_resync()  # once


async def test_a_loss_during_a_round_does_not_count_that_round() -> None:
    i = Interest()
    fut = i.acquire("ada")
    sent = i.pending_changes()[0]
    i.lost()  # e.g. a failover while the registration was in flight
    i.registered(sent)
    assert not fut.done()  # it may have gone to the node that died
    assert i.pending_changes() == (["ada"], [])
    i.registered(["ada"])
    assert fut.done() and i.take_resync()


async def test_a_loss_with_nobody_here_resyncs_nothing() -> None:
    i = Interest()
    i.lost()
    assert not i.wake.is_set() and not i.take_resync()


async def test_only_answered_registrations_are_renewed() -> None:
    i = Interest()
    i.acquire("ada")
    i.registered(i.pending_changes()[0])
    i.acquire("bo")
    i.pending_changes()  # bo in flight
    assert i.renewals() == ["ada"]


async def test_a_connection_gone_before_the_answer_is_cancelled() -> None:
    i = Interest()
    fut = i.acquire("ada")
    i.release("ada")
    await asyncio.sleep(0)
    assert fut.cancelled()
