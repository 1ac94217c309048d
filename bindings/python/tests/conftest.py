"""Shared helpers of the Python package's tests. Every test runs real
guests (KVM): Debian's static busybox, and Debian's python3 with the host
system mounted read-only. No test asserts a duration: each waits for what
it needs, bounded by the sandbox's own timeout."""

from __future__ import annotations

import os
import threading
from typing import Callable, List

import pytest

BUSYBOX = "/bin/busybox"
#: What a dynamic program from the host (Debian's python3) needs.
SYSTEM = {p: p for p in ("/usr", "/lib", "/lib64") if os.path.isdir(p)}
PYTHON = "/usr/bin/python3"


def sh(script: str) -> List[str]:
    return [BUSYBOX, "sh", "-c", script]


def wait_until(cond: Callable[[], bool], what: str) -> None:
    """Waits (without a deadline of its own: the guests' timeouts bound
    the test) until ``cond()`` holds."""
    event = threading.Event()
    while not cond():
        event.wait(0.005)


@pytest.fixture(autouse=True)
def _no_threads_left_behind():
    """Each test reaps the threads it starts."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.name.startswith("hvsandbox")]
    for t in left:
        t.join(timeout=60)
    assert not [t for t in left if t.is_alive()], f"threads left running: {left}"
