"""A timeout for a streamed response that each chunk pushes back: it bounds every wait (the
response, then each next chunk), not the transfer, so a large response on a slow link is not
abandoned while it makes progress, and a stalled one is."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

NATIVE_TIMEOUT = sys.version_info >= (3, 11)  # asyncio.timeout, which can be pushed back


@asynccontextmanager
async def stall_bound(timeout_s: float) -> AsyncIterator[Callable[[], None]]:
    """A timeout that each call of the given function restarts: ``timeout_s`` bounds every
    wait of a streamed response, not the whole response (a 16 MiB shard may take longer)."""
    import asyncio

    if NATIVE_TIMEOUT:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s) as bound:
            yield lambda: bound.reschedule(loop.time() + timeout_s)
        return
    task = asyncio.current_task()  # Python 3.10: cancel the task when a deadline passes
    assert task is not None
    handle: list[asyncio.TimerHandle] = []
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        task.cancel()

    def restart() -> None:
        for old in handle:
            old.cancel()
        handle[:] = [asyncio.get_running_loop().call_later(timeout_s, expire)]

    restart()
    try:
        yield restart
    except asyncio.CancelledError:
        if expired:
            raise TimeoutError(f"no bytes for {timeout_s} s") from None
        raise
    finally:
        for old in handle:
            old.cancel()
