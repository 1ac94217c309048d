"""Errors that need a hostile guest or a host without KVM access: a
runtime crash (then the sandbox is poisoned), and /dev/kvm unreachable."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import hvsandbox

REPO = pathlib.Path(__file__).resolve().parents[3]


def _hostile(name: str, tmp_path: pathlib.Path) -> str:
    """tests/hostile/<name>.c built static with musl-gcc."""
    if shutil.which("musl-gcc") is None:
        pytest.fail("musl-gcc is needed (scripts/install-deps.sh installs musl-tools)")
    out = tmp_path / name
    subprocess.run(["musl-gcc", "-static", "-O2", "-o", str(out), str(REPO / "tests" / "hostile" / f"{name}.c")], check=True)
    return str(out)


def test_a_crashed_runtime_is_guest_crashed_and_poisons_the_sandbox(tmp_path):
    prog = _hostile("hypercall", tmp_path)
    with hvsandbox.Sandbox(timeout=10) as sb:
        with pytest.raises(hvsandbox.GuestCrashed) as crashed:
            sb.run([prog, "one", "read-wild"])
        assert crashed.value.code == "GUEST_CRASHED"
        with pytest.raises(hvsandbox.SandboxPoisoned) as poisoned:
            sb.run(["/bin/busybox", "true"])
        assert poisoned.value.code == "SANDBOX_POISONED"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_no_access_to_dev_kvm_is_kvm_unavailable_and_says_what_to_do():
    script = (
        "import hvsandbox\n"
        "try:\n"
        "    hvsandbox.run(['/bin/busybox', 'true'])\n"
        "except hvsandbox.KvmUnavailable as e:\n"
        "    print(e.code, str(e))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    assert out.startswith("KVM_UNAVAILABLE "), out
    assert "/dev/kvm" in out
