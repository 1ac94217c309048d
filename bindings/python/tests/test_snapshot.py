"""Snapshots (entry and checkpoint, save/load) and pools."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import hvsandbox
from conftest import BUSYBOX, PYTHON, SYSTEM, sh

# Imports, then waits at the checkpoint; each run execs its stdin.
INTERPRETER = (
    "import sys, json, os\n"
    "args = open('/dev/hvsandbox/checkpoint', 'rb').read().split(b'\\0')[:-1]\n"
    "exec(sys.stdin.read())\n"
)


@pytest.fixture(scope="module")
def python_snapshot() -> hvsandbox.Snapshot:
    with hvsandbox.Sandbox(mounts=SYSTEM, timeout=60) as sb:
        return sb.snapshot([PYTHON, "-c", INTERPRETER], point="checkpoint")


def test_an_entry_snapshot_gives_each_run_its_arguments_and_environment():
    with hvsandbox.Sandbox(env={"WHO": "snap"}) as sb:
        snap = sb.snapshot([BUSYBOX, "sh", "-c", "echo $WHO"])
    assert (snap.point, snap.args, dict(snap.env)) == ("entry", [b"sh", b"-c", b"echo $WHO"], {b"WHO": b"snap"})
    assert snap.memory_bytes == hvsandbox.DEFAULT_MEMORY and snap.resident_bytes > 0
    assert snap.max_processes == 64 and snap.max_open_files == 1024 and snap.mounts == []
    with hvsandbox.Sandbox.from_snapshot(snap, env={"WHO": "run"}) as clone:
        assert clone.run(["echo", "resumed"]).stdout == b"resumed\n"
        assert clone.run(["sh", "-c", "echo $WHO"]).stdout == b"run\n"
        assert clone.run(snap.args, env=dict(snap.env)).stdout == b"snap\n"
        with pytest.raises(TypeError):
            clone.snapshot(sh("true"))


def test_a_checkpoint_snapshot_resumes_after_the_imports(python_snapshot):
    snap = python_snapshot
    assert snap.point == "checkpoint" and {g for _, g in snap.mounts} == set(SYSTEM)
    with hvsandbox.Sandbox.from_snapshot(snap, timeout=30) as sb:
        r = sb.run(["a1", "a2"], input="print(json.dumps([a.decode() for a in args]))", text=True)
        assert (r.returncode, r.stdout) == (0, '["a1", "a2"]\n'), r.stderr
        # Nothing of one run reaches the next.
        sb.run(input="open('/tmp/x', 'w').write('1')")
        assert sb.run(input="print(os.path.exists('/tmp/x'))").stdout == b"False\n"


def test_save_and_load_a_snapshot(tmp_path, python_snapshot):
    path = tmp_path / "python.snap"
    python_snapshot.save(path)
    loaded = hvsandbox.Snapshot.load(str(path))
    assert (loaded.point, loaded.memory_bytes) == ("checkpoint", python_snapshot.memory_bytes)
    # A snapshot from a file opens no host path it was not given.
    with pytest.raises(hvsandbox.InvalidConfig):
        hvsandbox.Sandbox.from_snapshot(loaded)
    with hvsandbox.Sandbox.from_snapshot(loaded, mounts=SYSTEM, timeout=30) as sb:
        assert sb.run(input="print(6 * 7)").stdout == b"42\n"
    again = hvsandbox.Snapshot.from_bytes(path.read_bytes())
    assert again.point == "checkpoint"
    # VMs with their own copy of its memory run the same, twice (a reset).
    again.copy_memory()
    with hvsandbox.Sandbox.from_snapshot(again, mounts=SYSTEM, timeout=30) as sb:
        for _ in range(2):
            assert sb.run(input="print(6 * 7)").stdout == b"42\n"
    again.copy_memory(False)
    with pytest.raises(TypeError):
        again.copy_memory("yes")


def test_bad_snapshot_files_are_snapshot_invalid(tmp_path):
    junk = tmp_path / "junk.snap"
    junk.write_bytes(b"not a snapshot" * 100)
    for load in (lambda: hvsandbox.Snapshot.load(junk), lambda: hvsandbox.Snapshot.from_bytes(b"junk")):
        with pytest.raises(hvsandbox.SnapshotInvalid) as info:
            load()
        assert info.value.code == "SNAPSHOT_INVALID"
    with pytest.raises(hvsandbox.SnapshotInvalid):
        # The program ends before its checkpoint.
        hvsandbox.Sandbox().snapshot(sh("true"), point="checkpoint")


def test_settings_a_snapshot_fixes_cannot_be_changed(python_snapshot):
    with pytest.raises(hvsandbox.InvalidConfig):
        hvsandbox.Sandbox.from_snapshot(python_snapshot, memory="128M")
    with hvsandbox.Sandbox.from_snapshot(python_snapshot, memory=python_snapshot.memory_bytes) as sb:
        sb.warm()
        assert sb.run(input="print('ok')").stdout == b"ok\n"


def test_a_pool_serves_threads_and_asyncio(python_snapshot):
    with hvsandbox.SandboxPool(python_snapshot, size=2, timeout=30) as pool:
        assert pool.size == 2
        with pool.get() as sb:
            assert sb.run(input="print('pooled')").stdout == b"pooled\n"
            assert repr(sb).startswith("<hvsandbox.Sandbox")
        with ThreadPoolExecutor(max_workers=3) as ex:
            outs = list(ex.map(lambda i: pool.run([str(i)], input="print(args[0].decode())").stdout, range(9)))
        assert outs == [f"{i}\n".encode() for i in range(9)]
        r = asyncio.run(pool.run_async(input="print('async')"))
        assert r.stdout == b"async\n"
        # A pooled sandbox goes back with a process still running: killed first.
        sb = pool.get()
        p = sb.spawn(input=None)
        sb.close()
        with pytest.raises(hvsandbox.Cancelled):
            p.wait()
        assert pool.run(input="print('still fine')").stdout == b"still fine\n"
    assert pool.closed
    with pytest.raises(hvsandbox.SandboxClosed):
        pool.get()
    for bad, exc in ((0, ValueError), ("2", TypeError)):
        with pytest.raises(exc):
            hvsandbox.SandboxPool(python_snapshot, size=bad)


def test_async_sandbox_from_snapshot(python_snapshot):
    async def main():
        async with hvsandbox.AsyncSandbox.from_snapshot(python_snapshot, timeout=30) as sb:
            return await sb.run(input="print('hello')")

    assert asyncio.run(main()).stdout == b"hello\n"


def test_a_snapshot_is_shared_between_threads(python_snapshot):
    outs = []

    def clone():
        with hvsandbox.Sandbox.from_snapshot(python_snapshot, timeout=30) as sb:
            outs.append(sb.run(input="print(1)").stdout)

    threads = [threading.Thread(target=clone) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outs == [b"1\n"] * 3
