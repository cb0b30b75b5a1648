"""router.cancel: a cancellation a library swallowed is raised again."""

from __future__ import annotations

import asyncio
import sys

import pytest

from router.cancel import checkpoint


async def test_checkpoint_passes_when_nothing_asked_to_cancel() -> None:
    checkpoint()


async def test_checkpoint_raises_a_cancellation_that_was_swallowed() -> None:
    turns = 0

    async def worker(started: asyncio.Event) -> None:
        nonlocal turns
        while True:
            checkpoint()
            turns += 1
            try:
                started.set()
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # what a library that loses the cancellation does

    started = asyncio.Event()
    task = asyncio.create_task(worker(started))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert turns == 1


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancellation from 3.12")
async def test_wait_for_loses_a_cancellation_on_this_python() -> None:
    # The flaw checkpoint() is for: the awaited call completes in the same
    # turn as the cancellation of the task waiting for it.
    async def quick() -> int:
        return 1

    async def caller() -> str:
        result = await asyncio.wait_for(quick(), 10)
        return f"went on with {result}"

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)  # caller waits for quick's task, which has finished
    task.cancel()
    assert await task == "went on with 1"
    assert task.cancelling() == 1
