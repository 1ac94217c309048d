"""asyncio twins: ``run_async``, ``AsyncSandbox``, ``AsyncProcess``.

Blocking calls run on worker threads (the native module releases the
GIL), so awaiting never blocks the event loop. Cancelling the task that
awaits a run, a wait or a read of a process kills the guest; the
cancellation goes on once the guest is gone.
"""

from __future__ import annotations

import functools
from typing import Any, AsyncIterator, Callable, Optional

from ._native import Snapshot
from ._threads import call as _call
from ._sync import Args, CompletedRun, Event, Output, Process, ProcessOutput, ProcessStdin, Sandbox, SandboxPool
from ._options import Data

__all__ = ["AsyncSandbox", "AsyncProcess", "AsyncProcessStdin", "AsyncProcessOutput", "run_async"]

class AsyncProcessStdin:
    """A spawned process's stdin, written without blocking the loop."""

    def __init__(self, stdin: ProcessStdin, kill: Callable[[], None]) -> None:
        self._stdin = stdin
        self._kill = kill

    async def write(self, data: Data) -> int:
        return await _call(functools.partial(self._stdin.write, data), self._kill)

    async def close(self) -> None:
        self._stdin.close()

    @property
    def closed(self) -> bool:
        return self._stdin.closed


class AsyncProcessOutput:
    """One output stream, read without blocking the loop; ``async for``
    gives its lines."""

    def __init__(self, output: ProcessOutput, kill: Callable[[], None]) -> None:
        self._output = output
        self._kill = kill

    async def read(self, size: int = -1) -> Output:
        return await _call(functools.partial(self._output.read, size), self._kill)

    async def __aiter__(self) -> AsyncIterator[Output]:
        lines = iter(self._output)
        end = object()
        while True:
            line = await _call(functools.partial(next, lines, end), self._kill)
            if line is end:
                return
            yield line


class AsyncProcess:
    """A spawned process for asyncio: ``async for event in process``,
    ``await process.stdin.write(...)``, ``await process.wait()``,
    ``process.kill()``."""

    def __init__(self, process: Process) -> None:
        self._process = process
        self.args = process.args
        self.stdin = AsyncProcessStdin(process.stdin, process.kill)
        self.stdout = AsyncProcessOutput(process.stdout, process.kill)
        self.stderr = AsyncProcessOutput(process.stderr, process.kill)

    @property
    def returncode(self) -> Optional[int]:
        return self._process.returncode

    async def __aiter__(self) -> AsyncIterator[Event]:
        events = iter(self._process)
        end = object()
        while True:
            ev = await _call(functools.partial(next, events, end), self.kill)
            if ev is end:
                return
            yield ev

    async def wait(self, *, check: bool = False) -> CompletedRun:
        return await _call(functools.partial(self._process.wait, check=check), self.kill)

    def poll(self) -> Optional[int]:
        return self._process.poll()

    def kill(self) -> None:
        self._process.kill()

    async def __aenter__(self) -> "AsyncProcess":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.kill()
        await _call(functools.partial(self._process.__exit__, None, None, None), self.kill)


class AsyncSandbox:
    """A :class:`Sandbox` for asyncio: the same settings, ``await`` on
    its blocking calls (``async with`` closes it)."""

    def __init__(self, **options: Any) -> None:
        self._sandbox = options.pop("_sandbox", None) or Sandbox(**options)

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot, **options: Any) -> "AsyncSandbox":
        return cls(_sandbox=Sandbox.from_snapshot(snapshot, **options))

    @property
    def sandbox(self) -> Sandbox:
        """The synchronous sandbox underneath."""
        return self._sandbox

    async def run(self, args: Optional[Args] = None, **kw: Any) -> CompletedRun:
        """:meth:`Sandbox.run` off the loop; cancelling the awaiting task
        kills the guest. Callbacks run on a worker thread."""
        return await _call(functools.partial(self._sandbox.run, args, **kw), self._sandbox.kill)

    async def spawn(self, args: Optional[Args] = None, **kw: Any) -> AsyncProcess:
        """:meth:`Sandbox.spawn`: returns once the process has started."""
        process = await _call(functools.partial(self._sandbox.spawn, args, **kw), self._sandbox.kill)
        return AsyncProcess(process)

    async def snapshot(self, args: Args, **kw: Any) -> Snapshot:
        return await _call(functools.partial(self._sandbox.snapshot, args, **kw), self._sandbox.kill)

    def kill(self) -> None:
        self._sandbox.kill()

    async def close(self) -> None:
        await _call(self._sandbox.close, self._sandbox.kill)

    @property
    def closed(self) -> bool:
        return self._sandbox.closed

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def run_async(args: Args, **kw: Any) -> CompletedRun:
    """:func:`hvsandbox.run` for asyncio (same arguments): the run goes on
    a worker thread; cancelling the awaiting task kills the guest."""
    sandbox_keys = {"timeout", "cpu_time", "memory", "mounts", "max_output"} | _SANDBOX_ONLY
    options = {k: kw.pop(k) for k in list(kw) if k in sandbox_keys}
    options.setdefault("memory", "64M")
    sandbox = Sandbox(**options)
    try:
        return await _call(functools.partial(sandbox.run, args, **kw), sandbox.kill)
    finally:
        sandbox.close()


_SANDBOX_ONLY = {
    "fail_on_output_limit",
    "seccomp",
    "huge_pages",
    "max_processes",
    "max_open_files",
    "max_input",
    "max_collect_bytes",
    "max_collect_files",
}

