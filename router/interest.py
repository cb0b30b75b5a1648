"""Interest-based fan-out: which teacher channels this replica listens to.

A replica subscribes to a teacher's channel when the teacher's first connection
arrives and unsubscribes after the last one leaves, so it receives only what
its own connections need. The rule that keeps a live connection without a gap:
a connection reads its history (its sync) only after Redis has confirmed the
subscription that will carry what comes next. ``acquire`` hands out a future
that resolves at that confirmation.

This is bookkeeping only: the subscriber task (``router.app``) sends what
``pending_changes`` says and reports confirmations and losses back. The desired
state is reconciled, not replayed, so a teacher who leaves and comes back
before the unsubscribe went out is simply never unsubscribed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Interest:
    def __init__(self, channel_of: Callable[[str], str]) -> None:
        self.channel_of = channel_of
        self._refs: dict[str, int] = {}  # channel -> connections that need it
        self._sent: set[str] = set()  # channels whose last command sent was SUBSCRIBE
        self._unconfirmed: dict[str, int] = {}  # channel -> SUBSCRIBEs not yet confirmed
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.wake = asyncio.Event()  # set when there is something to send

    # -- connections ---------------------------------------------------------

    def acquire(self, teacher_id: str) -> asyncio.Future[None]:
        """One more connection of the teacher; the future resolves once its
        channel is subscribed (at once if it already is)."""
        ch = self.channel_of(teacher_id)
        self._refs[ch] = self._refs.get(ch, 0) + 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.confirmed(ch):
            fut.set_result(None)
        else:
            self._waiters.setdefault(ch, []).append(fut)
            self.wake.set()
        return fut

    def release(self, teacher_id: str) -> None:
        """One connection of the teacher fewer."""
        ch = self.channel_of(teacher_id)
        n = self._refs.get(ch, 0) - 1
        if n > 0:
            self._refs[ch] = n
            return
        self._refs.pop(ch, None)
        for fut in self._waiters.pop(ch, []):
            fut.cancel()
        self.wake.set()

    def confirmed(self, ch: str) -> bool:
        return ch in self._sent and not self._unconfirmed.get(ch)

    @property
    def channels(self) -> int:
        """Channels wanted now (one per teacher with a connection here)."""
        return len(self._refs)

    # -- the subscriber task -------------------------------------------------

    def pending_changes(self) -> tuple[list[str], list[str]]:
        """What to send now: (subscribe, unsubscribe). Marks them sent."""
        self.wake.clear()
        subscribe = [ch for ch in self._refs if ch not in self._sent]
        unsubscribe = [ch for ch in self._sent if ch not in self._refs]
        for ch in subscribe:
            self._sent.add(ch)
            self._unconfirmed[ch] = self._unconfirmed.get(ch, 0) + 1
        for ch in unsubscribe:
            self._sent.discard(ch)
        return subscribe, unsubscribe

    def subscribe_confirmed(self, ch: str) -> None:
        """Redis confirmed one SUBSCRIBE of ``ch``; the waiters go once the last
        one sent is confirmed (an UNSUBSCRIBE may sit between two of them)."""
        left = self._unconfirmed.get(ch, 0) - 1
        if left > 0:
            self._unconfirmed[ch] = left
            return
        self._unconfirmed.pop(ch, None)
        if ch in self._sent:
            for fut in self._waiters.pop(ch, []):
                if not fut.done():
                    fut.set_result(None)

    def lost(self) -> None:
        """The subscription connection is gone: nothing is subscribed any more;
        everything wanted is sent again on the next connection."""
        self._sent.clear()
        self._unconfirmed.clear()
        if self._refs:
            self.wake.set()

    def all_confirmed(self) -> bool:
        return all(self.confirmed(ch) for ch in self._refs)
