"""asyncio twins: awaiting never blocks the loop, cancellation kills the
guest, async iteration over a spawned process's output."""

from __future__ import annotations

import asyncio

import pytest

import hvsandbox
from conftest import BUSYBOX, sh


def test_run_async():
    r = asyncio.run(hvsandbox.run_async(sh("echo hi; exit 2"), timeout=5, memory="64M", text=True))
    assert (r.returncode, r.stdout) == (2, "hi\n")
    with pytest.raises(hvsandbox.TimeoutExpired) as info:
        asyncio.run(hvsandbox.run_async(sh("echo t; sleep 100"), timeout="200ms"))
    assert info.value.stdout == b"t\n"


def test_a_ticking_task_keeps_ticking_during_a_long_run_and_cancelling_kills_the_guest():
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        async with hvsandbox.AsyncSandbox(timeout=60) as sb:
            tick = asyncio.create_task(ticker())
            run = asyncio.create_task(sb.run(sh("sleep 1000")))
            while not sb.sandbox.busy:
                await asyncio.sleep(0.001)
            start = ticks
            while ticks < start + 20:  # the loop is free while the guest runs
                await asyncio.sleep(0.001)
            assert not run.done()
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            # The guest is gone: the sandbox is free for the next run.
            assert not sb.sandbox.busy
            assert (await sb.run(sh("echo next"))).stdout == b"next\n"
            tick.cancel()

    asyncio.run(main())


def test_async_iteration_over_a_spawned_process():
    async def main():
        async with hvsandbox.AsyncSandbox(timeout=60) as sb:
            p = await sb.spawn(sh("echo first; read x; echo got $x >&2"), text=True)
            events = p.__aiter__()
            # Seen while the program waits for its input.
            assert await events.__anext__() == hvsandbox.Event("stdout", "first\n")
            assert p.poll() is None
            await p.stdin.write("ok\n")
            rest = [ev async for ev in events]
            assert rest == [hvsandbox.Event("stderr", "got ok\n")]
            assert (await p.wait()).returncode == 0

            p = await sb.spawn(sh("echo a; echo b; echo c >&2"))
            assert [line async for line in p.stdout] == [b"a\n", b"b\n"]
            assert await p.stderr.read() == b"c\n"
            await p.stdin.close()
            assert p.stdin.closed
            await p.wait()

    asyncio.run(main())


def test_cancelling_a_task_iterating_a_process_kills_it():
    async def main():
        async with hvsandbox.AsyncSandbox(timeout=60) as sb:
            p = await sb.spawn(sh("echo go; sleep 1000"))
            first = asyncio.Event()

            async def consume():
                async for _ in p:
                    first.set()

            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(hvsandbox.Cancelled):
                await p.wait()
            async with await sb.spawn([BUSYBOX, "true"]) as q:
                assert (await q.wait()).returncode == 0

    asyncio.run(main())


def test_many_async_runs_at_once():
    async def main():
        return await asyncio.gather(*(hvsandbox.run_async(sh(f"echo {i}")) for i in range(12)))

    assert [r.stdout for r in asyncio.run(main())] == [f"{i}\n".encode() for i in range(12)]
