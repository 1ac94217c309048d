"""Live processes: streaming, stdin, kill, callbacks on run."""

from __future__ import annotations

import threading

import pytest

import hvsandbox
from conftest import BUSYBOX, sh, wait_until


def test_the_first_line_arrives_before_the_program_exits():
    # The program cannot end before this test writes its stdin: the first
    # line is seen while it runs.
    with hvsandbox.Sandbox(timeout=60) as sb:
        p = sb.spawn(sh("echo first; read x; echo second $x"), text=True)
        events = iter(p)
        assert next(events) == hvsandbox.Event("stdout", "first\n")
        assert p.poll() is None and p.returncode is None and sb.busy
        assert p.try_next_event() is None  # it waits for its input
        p.stdin.write("go\n")
        assert list(events) == [hvsandbox.Event("stdout", "second go\n")]
        assert p.try_next_event() is None
        r = p.wait()
        assert (r.returncode, r.stdout, p.returncode, p.poll()) == (0, "", 0, 0)


def test_try_next_event_does_not_wait():
    with hvsandbox.Sandbox(timeout=60) as sb:
        p = sb.spawn(sh("echo é; read x; true"), text=True)
        got = []
        wait_until(lambda: got.append(p.try_next_event()) or got[-1] is not None, "the first line")
        assert got[-1] == hvsandbox.Event("stdout", "é\n")
        p.stdin.close()
        assert p.wait().returncode == 0


def test_a_conversation_over_stdin_and_stdout_readers():
    with hvsandbox.Sandbox(timeout=60) as sb:
        p = sb.spawn(sh("while read q; do [ \"$q\" = bye ] && break; echo \"A:$q\"; echo \"E:$q\" >&2; done"))
        lines = iter(p.stdout)
        for q in (b"one", b"two"):
            p.stdin.write(q + b"\n")
            assert next(lines) == b"A:" + q + b"\n"
        p.stdin.writelines([b"bye\n"])
        p.stdin.close()
        assert list(lines) == []
        assert p.stderr.read() == b"E:one\nE:two\n"
        assert p.wait().returncode == 0
        with pytest.raises(ValueError):
            p.stdin.write(b"late")


def test_wait_closes_an_unused_stdin_and_returns_what_was_not_read():
    with hvsandbox.Sandbox() as sb:
        p = sb.spawn([BUSYBOX, "sh", "-c", "cat; echo end >&2"])
        r = p.wait()
        assert (r.stdout, r.stderr) == (b"", b"end\n")
        p = sb.spawn([BUSYBOX, "cat"], input=b"given")
        assert p.stdout.read(2) == b"gi"
        assert p.wait().stdout == b"ven"


def test_writing_to_a_process_that_ended_is_a_broken_pipe():
    with hvsandbox.Sandbox() as sb:
        p = sb.spawn(sh("exit 0"))
        with p:
            assert list(p) == []
            with pytest.raises(BrokenPipeError):
                p.stdin.write(b"x" * 100000)


def test_kill_from_another_thread_while_wait_blocks():
    with hvsandbox.Sandbox(timeout=60) as sb:
        p = sb.spawn(sh("echo started; sleep 1000"))
        assert next(iter(p.stdout)) == b"started\n"
        killer = threading.Thread(target=p.kill)
        outcome = {}

        def waiter():
            try:
                p.wait()
            except hvsandbox.SandboxError as e:
                outcome["error"] = e

        w = threading.Thread(target=waiter)
        w.start()
        killer.start()
        killer.join()
        w.join()
        assert isinstance(outcome["error"], hvsandbox.Cancelled) and outcome["error"].code == "CANCELLED"
        assert sb.run(sh("echo after")).stdout == b"after\n"


def test_kill_while_streaming_gives_the_partial_output():
    with hvsandbox.Sandbox(timeout=60) as sb:
        p = sb.spawn([BUSYBOX, "yes"])
        for ev in p:
            assert ev.stream == "stdout"
            p.kill()
        with pytest.raises(hvsandbox.Cancelled):
            p.wait()
        with pytest.raises(hvsandbox.Cancelled):
            p.poll()


def test_the_sandbox_is_busy_while_a_process_runs():
    with hvsandbox.Sandbox(timeout=60) as sb:
        with sb.spawn(sh("read x")) as p:
            with pytest.raises(hvsandbox.SandboxBusy) as info:
                sb.run(sh("true"))
            assert info.value.code == "SANDBOX_BUSY"
        # Leaving the with block killed it; the sandbox is free.
        assert p.returncode is None and not sb.busy
        assert sb.run(sh("echo free")).stdout == b"free\n"


def test_streaming_past_max_output_when_the_command_says_so():
    with hvsandbox.Sandbox(max_output="64K", timeout=60) as sb:
        p = sb.spawn(sh("yes | head -c 300000"), unlimited_streaming=True)
        assert len(p.stdout.read()) == 300000
        p.wait()
        p = sb.spawn(sh("yes | head -c 300000"))
        assert len(p.stdout.read()) == 64 << 10
        assert p.wait().stdout_truncated


def test_a_timeout_ends_a_spawned_process():
    with hvsandbox.Sandbox(timeout="300ms") as sb:
        p = sb.spawn(sh("echo waiting; sleep 1000"))
        with pytest.raises(hvsandbox.TimeoutExpired) as info:
            p.wait()
        assert info.value.stdout == b"waiting\n"


def test_run_callbacks_see_output_as_it_comes_and_the_result_keeps_it():
    seen = []
    r = hvsandbox.run(
        sh("echo a; echo b >&2; echo c"),
        on_stdout=lambda s: seen.append(("out", s)),
        on_stderr=lambda s: seen.append(("err", s)),
        text=True,
    )
    assert "".join(s for k, s in seen if k == "out") == "a\nc\n" and ("err", "b\n") in seen
    assert (r.stdout, r.stderr, r.returncode) == ("a\nc\n", "b\n", 0)
    # Only one callback: the other stream is still collected.
    r = hvsandbox.run(sh("echo x; echo y >&2; exit 4"), on_stdout=lambda b: None)
    assert (r.stdout, r.stderr, r.returncode) == (b"x\n", b"y\n", 4)
    with pytest.raises(hvsandbox.CalledProcessError):
        hvsandbox.run(sh("exit 1"), on_stdout=print, check=True)


def test_a_callback_that_raises_stops_the_guest_and_the_error_goes_on():
    class Stop(Exception):
        pass

    def stop(chunk: bytes) -> None:
        raise Stop(chunk)

    with hvsandbox.Sandbox(timeout=60) as sb:
        with pytest.raises(Stop):
            sb.run(sh("echo one; sleep 1000"), on_stdout=stop)
        assert sb.run(sh("echo next")).stdout == b"next\n"


def test_a_timeout_during_callbacks_keeps_all_the_partial_output():
    chunks = []
    with pytest.raises(hvsandbox.TimeoutExpired) as info:
        hvsandbox.run(sh("echo a; sleep 1000"), timeout="500ms", on_stdout=chunks.append)
    assert chunks == [b"a\n"] and info.value.stdout == b"a\n"
