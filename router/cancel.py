"""A cancellation that a library lost, given back.

On Python 3.11, ``asyncio.wait_for`` returns the awaited result when that
completed in the same loop turn as the cancellation of the task waiting for it,
and the cancellation is gone (CPython gh-86296; 3.12 rebuilt ``wait_for`` on
``asyncio.timeout``). redis-py awaits each command's socket write that way when
``socket_timeout`` is set, so a task cancelled while its Redis call is in
flight may carry on as if it never was. That is how a client that dropped its
TCP connection right after authenticating could keep its slot for ever: its
connection's store worker went back to waiting for its next request, the
connection's TaskGroup waited for the worker, and the teacher's slot (and the
router's shutdown) waited for the TaskGroup.

The task still says it is being cancelled (``Task.cancelling()``), so a loop
that must end when cancelled calls :func:`checkpoint` once a turn. The router's
own timeouts use ``asyncio.timeout``, which keeps the cancellation.
"""

from __future__ import annotations

import asyncio


def checkpoint() -> None:
    """Raise ``CancelledError`` if the current task was asked to cancel and
    the request got lost on the way (see the module's docstring).

    Raises:
        asyncio.CancelledError: the task is being cancelled.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
