"""hvsandbox.run and Sandbox.run: results, every option, check, text."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import hvsandbox
from conftest import BUSYBOX, PYTHON, SYSTEM, sh


def test_run_returns_a_completed_run_shaped_like_subprocess():
    args = sh("echo out; echo err >&2; exit 3")
    r = hvsandbox.run(args, timeout=5, memory="64M")
    assert (r.args, r.returncode, r.stdout, r.stderr) == (args, 3, b"out\n", b"err\n")
    assert r.signal is None and r.fault is None and not r.truncated and r.files == {}
    assert isinstance(r.stats, hvsandbox.Stats)
    assert r.stats.syscalls > 0 and r.stats.wall > 0 and r.stats.memory_used > 0
    assert isinstance(r.stats.unknown_syscalls, dict)
    with pytest.raises(hvsandbox.CalledProcessError) as info:
        r.check_returncode()
    assert info.value.returncode == 3


def test_a_signal_is_a_negative_returncode_and_a_fault_is_described():
    r = hvsandbox.run(sh("kill -TERM $$"))
    assert (r.returncode, r.signal) == (-15, 15)
    # A real CPU exception in the program: a read of address 8.
    prog = "import ctypes; ctypes.string_at(8)"
    r = hvsandbox.run([PYTHON, "-c", prog], mounts=SYSTEM, timeout=30)
    assert (r.returncode, r.signal) == (-11, 11)
    assert isinstance(r.fault, hvsandbox.FaultInfo) and r.fault.vector == 14 and r.fault.address == 8


def test_check_raises_a_called_process_error_that_subprocess_users_catch():
    with pytest.raises(subprocess.CalledProcessError) as info:
        hvsandbox.run(sh("echo partial; exit 7"), check=True)
    e = info.value
    assert isinstance(e, hvsandbox.CalledProcessError)
    assert (e.returncode, e.output, e.stdout, e.cmd) == (7, b"partial\n", b"partial\n", sh("echo partial; exit 7"))
    assert e.result.returncode == 7
    assert hvsandbox.run(sh("true"), check=True).returncode == 0


def test_text_mode_input_and_encodings():
    r = hvsandbox.run([BUSYBOX, "cat"], input="héllo\n", text=True)
    assert r.stdout == "héllo\n" and r.stderr == ""
    r = hvsandbox.run([BUSYBOX, "cat"], input="é".encode("latin-1"), encoding="latin-1")
    assert r.stdout == "é"
    r = hvsandbox.run([BUSYBOX, "cat"], input=b"\xff", errors="replace")
    assert r.stdout == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        hvsandbox.run([BUSYBOX, "cat"], input=b"\xff", text=True)
    assert hvsandbox.run([BUSYBOX, "cat"], input=bytearray(b"ba")).stdout == b"ba"


def test_env_cwd_files_and_collect():
    files = {
        "/data/in.txt": b"bytes\n",
        "/data/text.txt": "text\n",
        "/bin2/script": hvsandbox.File(b"#!/bin/busybox sh\necho script ran\n", mode=0o755),
    }
    with hvsandbox.Sandbox(env={"SB": "sandbox", "BOTH": "sandbox"}, cwd="/work", files={"/etc/motd": b"hi\n"}) as sb:
        r = sb.run(
            sh('echo $SB $BOTH $RUN; pwd; cat /data/in.txt /data/text.txt /etc/motd; /bin2/script; mkdir -p /tmp/out; echo o > /tmp/out/o.txt'),
            env={"BOTH": "run", b"RUN": b"run"},
            files=files,
            collect=["/tmp/out"],
        )
        assert r.stdout == b"sandbox run run\n/work\nbytes\ntext\nhi\nscript ran\n", r.stderr
        assert r.files == {"/tmp/out/o.txt": b"o\n"} and not r.files_truncated
        r = sb.run(sh("echo ${SB:-none}"), env={"ONLY": "x"}, env_clear=True, cwd="/tmp")
        assert r.stdout == b"none\n"


def test_mounts_read_only_with_and_without_mount_objects(tmp_path):
    os.chmod(tmp_path, 0o755)
    (tmp_path / "f.txt").write_text("from host\n")
    os.chmod(tmp_path / "f.txt", 0o644)
    r = hvsandbox.run(sh("cat /m1/f.txt /m2/f.txt; echo x > /m1/new"), mounts={"/m1": str(tmp_path), "/m2": hvsandbox.Mount(tmp_path)})
    assert r.stdout == b"from host\nfrom host\n"
    assert r.returncode != 0 and not (tmp_path / "new").exists()
    r = hvsandbox.run(sh("ls /cpu | grep -c cpu0"), mounts={"/cpu": hvsandbox.Mount("/sys/devices/system/cpu", kernel_fs=True)})
    assert r.stdout == b"1\n"


def test_a_busybox_pipeline():
    r = hvsandbox.run(sh("seq 1 1000 | grep 7 | sort -r | head -n 3 | wc -l; seq 1 100 | awk '{s+=$1} END {print s}'"))
    assert r.stdout == b"3\n5050\n"


def test_debian_python3_runs_a_script_with_the_system_mounted():
    script = "import json, sys, hashlib\nprint(json.dumps({'v': sys.version_info[0], 'h': hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:8]}))\n"
    r = hvsandbox.run([PYTHON, "/job.py"], files={"/job.py": script}, input=b"abc", mounts=SYSTEM, timeout=30, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == '{"v": 3, "h": "ba7816bf"}\n'


def test_max_output_truncates_or_fails():
    r = hvsandbox.run(sh("yes | head -c 10000; yes e | head -c 10000 >&2"), max_output="1K")
    assert (len(r.stdout), len(r.stderr), r.stdout_truncated, r.stderr_truncated, r.truncated) == (1024, 1024, True, True, True)
    with pytest.raises(hvsandbox.OutputLimitExceeded) as info:
        hvsandbox.run(sh("yes | head -c 10000"), max_output=100, fail_on_output_limit=True)
    e = info.value
    assert e.code == "OUTPUT_LIMIT_EXCEEDED" and e.info["stream"] == "stdout" and e.info["limit"] == 100
    assert e.stdout == b"y\n" * 50


def test_timeout_raises_timeout_expired_with_the_partial_output():
    args = sh("echo before; sleep 1000")
    with pytest.raises(subprocess.TimeoutExpired) as info:
        hvsandbox.run(args, timeout="300ms")
    e = info.value
    assert isinstance(e, hvsandbox.TimeoutExpired) and isinstance(e, TimeoutError) and isinstance(e, hvsandbox.SandboxError)
    assert (e.code, e.timeout, e.cpu, e.cmd) == ("TIMEOUT", 0.3, False, args)
    assert (e.stdout, e.output, e.stderr) == (b"before\n", b"before\n", b"")
    assert "timeout" in str(e)


def test_cpu_time_limit_is_a_timeout_on_cpu():
    with pytest.raises(hvsandbox.TimeoutExpired) as info:
        hvsandbox.run(sh("echo spin; while :; do :; done"), cpu_time=0.2, timeout=60)
    assert info.value.cpu and info.value.timeout == 0.2 and info.value.stdout == b"spin\n"


def test_memory_limit_exceeded_carries_what_was_printed():
    prog = "import mmap\nprint('start', flush=True)\nms=[mmap.mmap(-1, 16<<20) for _ in range(4)]\nfor m in ms: m[::4096] = b'x' * (len(m)//4096)"
    with pytest.raises(hvsandbox.MemoryLimitExceeded) as info:
        hvsandbox.run([PYTHON, "-c", prog], memory=64 << 20, mounts=SYSTEM, timeout=30)
    e = info.value
    assert e.code == "MEMORY_LIMIT_EXCEEDED" and e.info["limit"] == 64 << 20 and e.stdout == b"start\n"


def test_invalid_program_and_invalid_config(tmp_path):
    not_elf = tmp_path / "x.txt"
    not_elf.write_text("hello")
    with pytest.raises(hvsandbox.InvalidProgram) as info:
        hvsandbox.run([str(not_elf)])
    assert info.value.code == "INVALID_PROGRAM" and info.value.info["program"] == str(not_elf)
    with pytest.raises(hvsandbox.InvalidProgram):
        hvsandbox.run(["no-such-program"])
    with pytest.raises(hvsandbox.InvalidProgram):
        hvsandbox.run(["/x"], image=b"not an elf")
    for bad in ({"memory": "3M"}, {"max_processes": 0}, {"max_open_files": 1}, {"mounts": {"/m": "/nonexistent"}}, {"cwd": "relative"}):
        with pytest.raises(hvsandbox.InvalidConfig) as info:
            hvsandbox.Sandbox(**bad)
        assert isinstance(info.value, ValueError) and info.value.code == "INVALID_CONFIG"
    with pytest.raises(hvsandbox.InvalidConfig):
        hvsandbox.run([BUSYBOX, "cat"], input=b"x" * 2000, max_input="1K")
    with pytest.raises(hvsandbox.InvalidConfig):
        hvsandbox.run([BUSYBOX, "true"], files={"relative/path": b""})


def test_an_image_in_memory_runs():
    with open(BUSYBOX, "rb") as f:
        image = f.read()
    assert hvsandbox.run(["busybox", "echo", "from memory"], image=image).stdout == b"from memory\n"


def test_limits_on_processes_open_files_and_collection():
    forks = sh("for i in 1 2 3 4 5 6; do sleep 0.2 & done; wait; echo done")
    assert hvsandbox.run(forks).stdout == b"done\n"
    r = hvsandbox.run(forks, max_processes=3)
    assert b"can't fork" in r.stderr and r.returncode != 0
    opens = sh("exec 3</dev/null 4</dev/null 5</dev/null 6</dev/null && echo opened")
    assert hvsandbox.run(opens).stdout == b"opened\n"
    r = hvsandbox.run(opens, max_open_files=5)
    assert b"Too many open files" in r.stderr and r.stdout == b""
    r = hvsandbox.run(sh("mkdir /tmp/o; for i in 1 2 3 4; do echo $i > /tmp/o/$i; done"), collect=["/tmp/o"], max_collect_files=2)
    assert len(r.files) == 2 and r.files_truncated
    r = hvsandbox.run(sh("yes | head -c 5000 > /tmp/big"), collect=["/tmp/big"], max_collect_bytes="1K")
    assert r.files_truncated and len(r.files.get("/tmp/big", b"")) <= 1024


def test_seccomp_modes():
    for mode in ("enforce", "log", "off"):
        assert hvsandbox.run([BUSYBOX, "true"], seccomp=mode).returncode == 0


def _hugetlb_free() -> int:
    """Pages free in the host's hugetlb pool (``HugePages_Free``)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                return int(line.split()[1])
    return 0


def test_huge_pages_refuses_a_bad_value_as_seccomp_does():
    with pytest.raises(ValueError) as bad_seccomp:
        hvsandbox.Sandbox(seccomp="on")
    with pytest.raises(ValueError) as info:
        hvsandbox.Sandbox(huge_pages="on")
    assert type(info.value) is type(bad_seccomp.value)
    assert "huge_pages" in str(info.value) and "'on'" in str(info.value)


def test_huge_pages_require_fails_when_the_pool_is_too_small_and_prefer_falls_back():
    memory_mib = _hugetlb_free() * 2 + 64
    if memory_mib > 16384:
        pytest.skip(f"the hugetlb pool holds more than a VM may have ({memory_mib} MiB)")
    memory = f"{memory_mib}M"
    with pytest.raises(hvsandbox.InvalidConfig) as info:
        hvsandbox.run([BUSYBOX, "echo", "hi"], memory=memory, huge_pages="require")
    assert info.value.code == "INVALID_CONFIG" and "hugetlb pool" in str(info.value)
    r = hvsandbox.run([BUSYBOX, "echo", "hi"], memory=memory, huge_pages="prefer")
    assert (r.returncode, r.stdout) == (0, b"hi\n"), r.stderr


def test_huge_pages_require_runs_from_the_pool_when_it_has_room():
    free = _hugetlb_free()
    if free < 29:
        pytest.skip(f"the hugetlb pool has {free} free pages; a 64M VM needs 29 (vm.nr_hugepages)")
    with hvsandbox.Sandbox(memory="64M", huge_pages="require") as sb:
        r = sb.run([BUSYBOX, "echo", "hi"])
    assert (r.returncode, r.stdout) == (0, b"hi\n"), r.stderr


def test_sizes_and_durations_read_as_the_command_line_reads_them():
    ps = hvsandbox.parse_size
    assert (ps("64M"), ps("1g"), ps("512KiB"), ps("4096"), ps("2MB"), ps(7)) == (64 << 20, 1 << 30, 512 << 10, 4096, 2 << 20, 7)
    for bad in ("", "12X", "-1M", "99999999999999999999G", "1.5M"):
        with pytest.raises(ValueError):
            ps(bad)
    pd = hvsandbox.parse_duration
    import datetime

    assert (pd("2s"), pd("500ms"), pd("1.5m"), pd("3"), pd("1h"), pd(2), pd(0.5)) == (2, 0.5, 90, 3, 3600, 2, 0.5)
    assert pd(datetime.timedelta(milliseconds=250)) == 0.25
    for bad in ("2 days", "s", "-1s", 0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            pd(bad)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: hvsandbox.run("/bin/busybox true"), TypeError, "list of arguments"),
        (lambda: hvsandbox.run([]), ValueError, "program"),
        (lambda: hvsandbox.run([BUSYBOX, 3]), TypeError, "argument"),
        (lambda: hvsandbox.run(42), TypeError, "args"),
        (lambda: hvsandbox.run([BUSYBOX], memory=True), TypeError, "memory"),
        (lambda: hvsandbox.run([BUSYBOX], memory=[1]), TypeError, "memory"),
        (lambda: hvsandbox.run([BUSYBOX], memory="lots"), ValueError, "memory"),
        (lambda: hvsandbox.run([BUSYBOX], memory=-1), ValueError, "memory"),
        (lambda: hvsandbox.run([BUSYBOX], memory=1 << 70), ValueError, "memory"),
        (lambda: hvsandbox.run([BUSYBOX], timeout=-1), ValueError, "timeout"),
        (lambda: hvsandbox.run([BUSYBOX], timeout=1e30), ValueError, "timeout"),
        (lambda: hvsandbox.run([BUSYBOX], timeout="soon"), ValueError, "timeout"),
        (lambda: hvsandbox.run([BUSYBOX], env=["A=1"]), TypeError, "env"),
        (lambda: hvsandbox.run([BUSYBOX], env={"A=B": "1"}), ValueError, "environment"),
        (lambda: hvsandbox.run([BUSYBOX], env={"A": 1}), TypeError, "env"),
        (lambda: hvsandbox.run([BUSYBOX], files={"/f": 1}), TypeError, "files"),
        (lambda: hvsandbox.run([BUSYBOX], files={"/f": hvsandbox.File(b"", mode=0o17777)}), ValueError, "mode"),
        (lambda: hvsandbox.run([BUSYBOX], mounts={"/m": 3}), TypeError, "mounts"),
        (lambda: hvsandbox.run([BUSYBOX], input=3), TypeError, "input"),
        (lambda: hvsandbox.run([BUSYBOX], seccomp="maybe"), ValueError, "seccomp"),
        (lambda: hvsandbox.run([BUSYBOX], max_processes="2"), TypeError, "max_processes"),
        (lambda: hvsandbox.run([BUSYBOX], collect="/out"), TypeError, "collect"),
        (lambda: hvsandbox.run([BUSYBOX], on_stdout=3), TypeError, "on_stdout"),
        (lambda: hvsandbox.run([BUSYBOX], encoding="no-such-codec"), LookupError, "codec"),
        (lambda: hvsandbox.run([BUSYBOX], no_such_option=1), TypeError, "no_such_option"),
        (lambda: hvsandbox.Sandbox().run(), TypeError, "args"),
        (lambda: hvsandbox.Sandbox().snapshot(sh("true"), point="later"), ValueError, "point"),
        (lambda: hvsandbox.Sandbox.from_snapshot("snap"), TypeError, "Snapshot"),
    ],
)
def test_bad_arguments_raise_type_or_value_errors_that_say_what_is_wrong(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words.lower() in str(info.value).lower()


def test_the_native_layer_refuses_bad_values_without_panicking():
    from hvsandbox import _native

    for options, exc in (({"memory": -1}, ValueError), ({"memory": "x"}, TypeError), ({"bogus": 1}, TypeError), ({"timeout": float("nan")}, ValueError), ({1: 2}, TypeError), ({"seccomp": "x"}, ValueError), ({"huge_pages": "on"}, ValueError)):
        with pytest.raises(exc):
            _native.Sandbox(options)
    with pytest.raises(TypeError):
        _native.Command("str is not bytes", [])
    with hvsandbox.Sandbox() as sb:
        p = sb.spawn(sh("true"))
        with pytest.raises(ValueError):
            p._native.read(3, 10)
        p.wait()


def test_a_closed_sandbox_raises_sandbox_closed():
    sb = hvsandbox.Sandbox()
    sb.close()
    assert sb.closed
    with pytest.raises(hvsandbox.SandboxClosed) as info:
        sb.run(sh("true"))
    assert info.value.code == "SANDBOX_CLOSED" and isinstance(info.value, ValueError)
    sb.close()  # twice is fine


def test_every_rust_error_code_has_its_class():
    expected = {
        "TIMEOUT": (hvsandbox.TimeoutExpired, subprocess.TimeoutExpired),
        "CANCELLED": (hvsandbox.Cancelled,),
        "MEMORY_LIMIT_EXCEEDED": (hvsandbox.MemoryLimitExceeded,),
        "OUTPUT_LIMIT_EXCEEDED": (hvsandbox.OutputLimitExceeded,),
        "GUEST_CRASHED": (hvsandbox.GuestCrashed,),
        "INVALID_PROGRAM": (hvsandbox.InvalidProgram,),
        "INVALID_CONFIG": (hvsandbox.InvalidConfig, ValueError),
        "KVM_UNAVAILABLE": (hvsandbox.KvmUnavailable,),
        "SANDBOX_POISONED": (hvsandbox.SandboxPoisoned,),
        "SANDBOX_BUSY": (hvsandbox.SandboxBusy,),
        "SNAPSHOT_INVALID": (hvsandbox.SnapshotInvalid,),
        "JAIL_VIOLATION": (hvsandbox.JailViolation,),
        "INTERNAL": (hvsandbox.InternalError,),
        "SANDBOX_CLOSED": (hvsandbox.SandboxClosed,),
    }
    from hvsandbox._errors import make_error

    for code, classes in expected.items():
        e = make_error(code, "msg", {"stdout": b"o"})
        assert e.code == code and all(isinstance(e, c) for c in classes + (hvsandbox.SandboxError,))
        assert str(e) == "msg" and e.stdout == b"o"
    # A code a newer native module might add still makes a SandboxError.
    assert type(make_error("NEW_KIND", "m", {})) is hvsandbox.SandboxError
    # Pickled across processes (multiprocessing, concurrent.futures).
    import pickle

    e = pickle.loads(pickle.dumps(make_error("TIMEOUT", "m", {"limit": 1.0, "stdout": b"x"})))
    assert isinstance(e, hvsandbox.TimeoutExpired) and e.timeout == 1.0 and e.stdout == b"x"


def test_kvm_unavailable_says_what_to_do():
    """Reached for real only without /dev/kvm (a child with a mount
    namespace hiding it would need root): the message comes from the Rust
    API, which the Rust tests check; here, its class and text."""
    from hvsandbox._errors import make_error

    e = make_error("KVM_UNAVAILABLE", "KVM is unavailable: no permission to open /dev/kvm: add this user to the 'kvm' group", {})
    assert isinstance(e, hvsandbox.KvmUnavailable) and "kvm" in str(e)


def test_stats_count_rewritten_sites_and_slow_calls_and_none_when_rewriting_is_off():
    # The switch is read once per process: each setting in a Python of its own.
    code = (
        "import hvsandbox; "
        f"r = hvsandbox.run(['{BUSYBOX}', 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=1', 'count=2000'], timeout=60); "
        "print(r.returncode, r.stats.rewritten_sites, r.stats.syscalls, r.stats.slow_syscalls)"
    )

    def stats(value: str) -> tuple[int, int, int]:
        env = dict(os.environ, HVSANDBOX_REWRITE=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        code_, sites, calls, slow = map(int, out.stdout.split())
        assert code_ == 0 and calls > 4000, out.stderr
        return sites, calls, slow

    # dd's 4000 one-byte reads and writes come from two sites, fast after
    # their first calls.
    sites, calls, slow = stats("1")
    assert sites > 0 and 0 < slow < calls / 10
    sites, calls, slow = stats("0")
    assert sites == 0 and slow == calls
