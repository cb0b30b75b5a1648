"""Interest-based fan-out: which teachers this replica has told Redis it serves.

A replica registers its interest in a teacher (a lease in the teacher's slot,
``router/store.py``) when the teacher's first connection arrives and withdraws
it after the last one leaves. The ingest script reads those leases and publishes
each replica only its teachers' part of a batch, one message per replica per
batch, on the replica's own channel. The rule that keeps a live connection
without a gap: a connection reads its history (its sync) only after Redis has
confirmed the registration, so whatever is recorded from then on is published
to this replica, and whatever came before is in the history. ``acquire`` hands
out a future that resolves at that confirmation.

This is bookkeeping only, with no I/O: the sender task (``router.app``) sends
what ``pending_changes`` says, one round at a time, and reports back. The
desired state is reconciled, not replayed, so a teacher who leaves and comes
back before the withdrawal went out is simply never withdrawn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Interest:
    def __init__(self) -> None:
        self._refs: dict[str, int] = {}  # teacher -> connections here
        self._sent: set[str] = set()  # teachers whose last command sent was a registration
        self._unconfirmed: set[str] = set()  # registrations sent, not yet answered
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._resync = False  # after a loss: re-sync every connection once all are back
        self._lost_some: set[str] = set()  # lost one by one: each re-synced when it is back
        self.wake = asyncio.Event()  # set when there is something to send

    # -- connections ---------------------------------------------------------

    def acquire(self, teacher_id: str) -> asyncio.Future[None]:
        """One more connection of the teacher; the future resolves once this
        replica's interest in the teacher is registered (at once if it is)."""
        self._refs[teacher_id] = self._refs.get(teacher_id, 0) + 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.confirmed(teacher_id):
            fut.set_result(None)
        else:
            self._waiters.setdefault(teacher_id, []).append(fut)
            self.wake.set()
        return fut

    def release(self, teacher_id: str) -> None:
        """One connection of the teacher fewer."""
        n = self._refs.get(teacher_id, 0) - 1
        if n > 0:
            self._refs[teacher_id] = n
            return
        self._refs.pop(teacher_id, None)
        self._lost_some.discard(teacher_id)
        for fut in self._waiters.pop(teacher_id, []):
            fut.cancel()
        self.wake.set()

    def confirmed(self, teacher_id: str) -> bool:
        return teacher_id in self._sent and teacher_id not in self._unconfirmed

    def connected(self) -> list[str]:
        """The teachers with a connection here."""
        return list(self._refs)

    @property
    def teachers(self) -> int:
        """Teachers with a connection here (each one registered, or about to be)."""
        return len(self._refs)

    # -- the sender task -----------------------------------------------------

    def pending_changes(self) -> tuple[list[str], list[str]]:
        """What to send now: (register, withdraw). Marks them sent. The sender
        sends one round and answers it before asking again."""
        self.wake.clear()
        register = [t for t in self._refs if t not in self._sent]
        withdraw = [t for t in self._sent if t not in self._refs]
        self._sent.update(register)
        self._unconfirmed.update(register)
        self._sent.difference_update(withdraw)
        return register, withdraw

    def registered(self, teachers: list[str]) -> None:
        """Redis answered the registration of ``teachers``: their connections
        may read their history now."""
        for t in teachers:
            self._unconfirmed.discard(t)
            if t in self._sent:
                for fut in self._waiters.pop(t, []):
                    if not fut.done():
                        fut.set_result(None)

    def failed(self, teachers: list[str]) -> None:
        """The registration of ``teachers`` got no answer: it is sent again (the
        waiting connections keep waiting, up to their own timeout)."""
        self._sent.difference_update(teachers)
        self._unconfirmed.difference_update(teachers)
        if any(t in self._refs for t in teachers):
            self.wake.set()

    def renewals(self) -> list[str]:
        """Registrations to renew before their lease ends (the confirmed ones)."""
        return [t for t in self._sent if t not in self._unconfirmed]

    def lost(self) -> None:
        """What this replica hears or has registered may be gone (the channel's
        connection was lost, Redis restarted, a primary failed over): everything
        is registered again, and every connection catches up once all is back."""
        self._sent.clear()
        self._unconfirmed.clear()
        self._resync = bool(self._refs)
        if self._refs:
            self.wake.set()

    def lost_some(self, teachers: Iterable[str]) -> None:
        """What this replica hears for ``teachers`` may be gone (sharded fan-out:
        the node that served their channels was lost, or a slot moved): they are
        registered again, and each one's connections catch up once it is back
        (:meth:`take_back`); the other teachers are not disturbed."""
        for t in teachers:
            self._sent.discard(t)
            self._unconfirmed.discard(t)
            if t in self._refs:
                self._lost_some.add(t)
                self.wake.set()

    @property
    def lost_pending(self) -> int:
        """Teachers of :meth:`lost_some` not registered again yet."""
        return len(self._lost_some)

    def take_back(self, teacher_id: str) -> bool:
        """True once, when a teacher of :meth:`lost_some` is registered again:
        the moment to catch its connections up."""
        if teacher_id in self._lost_some and self.confirmed(teacher_id):
            self._lost_some.discard(teacher_id)
            return True
        return False

    def take_resync(self) -> bool:
        """True once after a loss, when every teacher here is registered again:
        the moment to catch the connections up."""
        if self._resync and all(self.confirmed(t) for t in self._refs):
            self._resync = False
            return True
        return False
