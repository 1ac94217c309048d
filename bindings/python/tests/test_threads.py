"""Threads: the GIL is released while guests run, kills from other
threads, many runs in parallel, Ctrl-C on the main thread."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import hvsandbox
from conftest import sh, wait_until


def _run_in_thread(sb: hvsandbox.Sandbox, args, outcome: dict, key: str) -> threading.Thread:
    def body():
        try:
            outcome[key] = sb.run(args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome[key] = e

    t = threading.Thread(target=body)
    t.start()
    return t


def _kill_until_done(sb: hvsandbox.Sandbox, t: threading.Thread) -> None:
    """Kills until the thread's run has returned: ``busy`` turns true when
    the call holds the sandbox, a moment before its guest starts, and a
    kill never reaches a run that starts after it."""
    while t.is_alive():
        sb.kill()
        t.join(0.005)


def test_two_runs_overlap_and_python_runs_meanwhile():
    # Both threads are inside run() at once (each sandbox busy), and this
    # thread runs Python code meanwhile: the GIL is free while guests run.
    outcome: dict = {}
    with hvsandbox.Sandbox(timeout=60) as a, hvsandbox.Sandbox(timeout=60) as b:
        ta = _run_in_thread(a, sh("sleep 1000"), outcome, "a")
        tb = _run_in_thread(b, sh("sleep 1000"), outcome, "b")
        wait_until(lambda: a.busy and b.busy, "both runs in progress")
        assert outcome == {}
        _kill_until_done(a, ta)
        _kill_until_done(b, tb)
        assert isinstance(outcome["a"], hvsandbox.Cancelled) and isinstance(outcome["b"], hvsandbox.Cancelled)
        # A kill never reaches a later run.
        assert a.run(sh("echo again")).stdout == b"again\n"


def test_kill_from_another_thread_returns_the_partial_output():
    outcome: dict = {}
    with hvsandbox.Sandbox(timeout=60) as sb:
        t = _run_in_thread(sb, sh("echo partial; while :; do :; done"), outcome, "r")
        wait_until(lambda: sb.busy, "run in progress")
        _kill_until_done(sb, t)
        err = outcome["r"]
        assert isinstance(err, hvsandbox.Cancelled) and err.code == "CANCELLED"
        # The spin loop may be killed before the echo reached the host.
        assert err.stdout in (b"", b"partial\n")
        sb.kill()  # idle: nothing to stop
        assert sb.run(sh("echo fine")).stdout == b"fine\n"


def test_many_runs_in_parallel_from_threads():
    def job(i: int) -> bytes:
        return hvsandbox.run(sh(f"echo {i}; seq 1 {i} | wc -l")).stdout

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(job, range(40)))
    assert results == [f"{i}\n{i}\n".encode() for i in range(40)]


def test_one_sandbox_shared_by_threads_takes_turns():
    with hvsandbox.Sandbox() as sb, ThreadPoolExecutor(max_workers=4) as ex:
        outs = list(ex.map(lambda i: sb.run(sh(f"echo {i}")).stdout, range(20)))
    assert outs == [f"{i}\n".encode() for i in range(20)]


def test_ctrl_c_during_a_run_stops_the_guest_and_raises_keyboard_interrupt():
    assert threading.current_thread() is threading.main_thread()
    done = threading.Event()

    def press_ctrl_c():
        # Until run() returns: the first presses may come before the guest
        # starts (then Python's own handler notes them).
        while not done.wait(0.05):
            os.kill(os.getpid(), signal.SIGINT)

    with hvsandbox.Sandbox(timeout=60) as sb:
        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                sb.run(sh("sleep 1000"))
        finally:
            done.set()
            presser.join()
        # The guest was stopped, not left running: the sandbox is free.
        assert not sb.busy
        try:
            assert sb.run(sh("echo after")).stdout == b"after\n"
        except KeyboardInterrupt:  # a last press landed just now
            assert sb.run(sh("echo after")).stdout == b"after\n"
    # Python's handler is back.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
