"""Calls per second of the Python package, beside subprocess (for
BENCHMARKS.md; not part of the tests). Run on an idle machine, with the
wheel installed:

    python bindings/python/bench.py [seconds per line, default 2]

Lines: `hvsandbox.run(["/bin/busybox", "true"])` from 1 and 2 threads
beside `subprocess.run` of the same binary; a warm run from an entry
snapshot and a pooled one (get, run, return), whose per-call times are
to be set beside the Rust bench's same lines (`cargo bench -p
hvsandbox-tests --bench warm`) to read the binding's overhead.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Callable

import hvsandbox

BUSYBOX = "/bin/busybox"


def rate(call: Callable[[], None], seconds: float, threads: int = 1) -> float:
    """Calls per second of `call` from `threads` threads over `seconds`."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            call()
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def line(what: str, per_second: float, base: float) -> None:
    print(f"{what:<52} {per_second:>9.0f}/s {1e6 / per_second:>9.1f} µs  ({per_second / base:.2f}x subprocess)")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    args = [BUSYBOX, "true"]

    def sub() -> None:
        subprocess.run(args, check=True)

    def new_sandbox() -> None:
        hvsandbox.run(args, check=True)

    base1 = rate(sub, seconds)
    base2 = rate(sub, seconds, threads=2)
    line("subprocess.run, 1 thread", base1, base1)
    line("subprocess.run, 2 threads", base2, base2)
    line("hvsandbox.run (new sandbox each), 1 thread", rate(new_sandbox, seconds), base1)
    line("hvsandbox.run (new sandbox each), 2 threads", rate(new_sandbox, seconds, threads=2), base2)

    with hvsandbox.Sandbox() as sb:
        snap = sb.snapshot(args)
    with hvsandbox.Sandbox.from_snapshot(snap) as warm:
        warm.warm()
        line("warm: reset to the entry snapshot, run", rate(lambda: warm.run(check=True) and None, seconds), base1)
        # The binding's own cost: a call's time less the run's wall time
        # as the Rust API measured it.
        n, spent, inside = 0, 0.0, 0.0
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            t = time.perf_counter()
            r = warm.run()
            spent += time.perf_counter() - t
            inside += r.stats.wall
            n += 1
        print(f"{'call time less the Rust wall (binding, handoff)':<52} {(spent - inside) / n * 1e6:>9.1f} µs")
    with hvsandbox.SandboxPool(snap, size=4) as pool:
        time.sleep(0.05)
        line("pool: get, run, return", rate(lambda: pool.run(check=True) and None, seconds), base1)


if __name__ == "__main__":
    main()
