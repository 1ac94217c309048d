'''The snippets of the README's Python section, run as they are written
there (keep the two in step).'''

from __future__ import annotations

import os
import textwrap

RUN = """
import hvsandbox

r = hvsandbox.run(["/bin/busybox", "sh", "-c", "echo hi; exit 3"], timeout=2, memory="64M")
assert (r.returncode, r.stdout, r.stderr) == (3, b"hi\\n", b"")   # like subprocess.CompletedProcess
print(r.stats.wall, r.stats.syscalls, r.stats.memory_used)
assert hvsandbox.run(["/bin/busybox", "wc", "-l"], input="a\\nb\\n", text=True).stdout == "2\\n"

with hvsandbox.Sandbox(memory="64M", timeout="2s", files={"/in.txt": b"data"}) as sb:
    r = sb.run(["/bin/busybox", "cat", "/in.txt"], check=True)    # CalledProcessError if not 0
    try:
        sb.run(["/bin/busybox", "sh", "-c", "echo partial; sleep 10"])
    except hvsandbox.TimeoutExpired as e:                           # also subprocess.TimeoutExpired
        assert (e.code, e.stdout) == ("TIMEOUT", b"partial\\n")
"""

STREAM = """
import hvsandbox

with hvsandbox.Sandbox(timeout=10) as sb:
    p = sb.spawn(["/bin/busybox", "sh", "-c", "echo name?; read n; echo hi $n"], text=True)
    for ev in p:                          # Event(stream, data), as it is produced
        if ev.data == "name?\\n":
            p.stdin.write("ada\\n")        # p.stdin.close() ends the input
        else:
            assert ev == hvsandbox.Event("stdout", "hi ada\\n")
    assert p.wait().returncode == 0       # p.kill() works from any thread
    r = sb.run(["/bin/busybox", "sh", "-c", "echo 1; echo 2"], on_stdout=print)
"""

ASYNC = """
import asyncio, hvsandbox

async def main():
    r = await hvsandbox.run_async(["/bin/busybox", "echo", "hi"], timeout=2)
    async with hvsandbox.AsyncSandbox(timeout=10) as sb:
        p = await sb.spawn(["/bin/busybox", "sh", "-c", "for i in 1 2 3; do echo $i; done"])
        lines = [line async for line in p.stdout]          # or: async for ev in p
        await p.wait()
        task = asyncio.create_task(sb.run(["/bin/busybox", "sleep", "100"]))
        await asyncio.sleep(0.1)
        task.cancel()                                      # kills the guest
    return r.stdout, lines

assert asyncio.run(main()) == (b"hi\\n", [b"1\\n", b"2\\n", b"3\\n"])
"""

SNAPSHOT = """
import hvsandbox

system = {"/usr": "/usr", "/lib": "/lib", "/lib64": "/lib64"}
prog = "import sys, json\\nopen('/dev/hvsandbox/checkpoint', 'rb').read()\\nexec(sys.stdin.read())"
with hvsandbox.Sandbox(mounts=system) as sb:
    snap = sb.snapshot(["/usr/bin/python3", "-c", prog], point="checkpoint")   # after the imports
with hvsandbox.SandboxPool(snap, size=4, timeout=5) as pool:                  # warm clones
    assert pool.run(input="print(json.dumps([1, 2]))").stdout == b"[1, 2]\\n"
snap.save("python.snap")
loaded = hvsandbox.Snapshot.load("python.snap")
with hvsandbox.Sandbox.from_snapshot(loaded, mounts=system) as clone:         # in another process too
    assert clone.run(input="print(6 * 7)").stdout == b"42\\n"
"""


def _run(snippet: str) -> None:
    exec(compile(textwrap.dedent(snippet), "<README>", "exec"), {})


def test_run_snippet():
    _run(RUN)


def test_streaming_snippet():
    _run(STREAM)


def test_async_snippet():
    _run(ASYNC)


def test_snapshot_snippet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(SNAPSHOT)
    assert os.path.exists("python.snap")
