"""Worker threads for asyncio: blocking calls of the native module (which
release the GIL) run there, so awaiting them never blocks the loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Callable, Optional, TypeVar

T = TypeVar("T")

_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
_executor_lock = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads blocking calls wait on: many (they wait for guests,
    they do not compute), started as needed."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=256, thread_name_prefix="hvsandbox")
        return _executor


async def call(fn: Callable[[], T], kill: Callable[[], None]) -> T:
    """Runs ``fn`` on a worker thread; if the awaiting task is cancelled,
    calls ``kill`` until ``fn`` has returned, then re-raises."""
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(_pool(), fn)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        # The call may not have reached the guest yet: kill until it ends.
        while not fut.done():
            kill()
            await asyncio.wait({fut}, timeout=0.05)
        if not fut.cancelled():
            fut.exception()  # retrieved: the cancellation is what is reported
        raise
