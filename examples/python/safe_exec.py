"""Execute untrusted Python code safely: the kind of helper AI agent
frameworks call as a "code interpreter" tool.

Each call runs the code in a micro-VM cloned from a CPython that has
already started and imported its libraries (a checkpoint snapshot), taken
from a pool of warm clones, with its own timeout and memory. It returns
stdout, stderr, the exit code and, for a run that did not complete, the
error's stable code (TIMEOUT, MEMORY_LIMIT_EXCEEDED, ...).

    pip install <the hvsandbox wheel>      # see the README's Python section
    python3 examples/python/safe_exec.py
"""

from __future__ import annotations

import json
import os
import threading
from typing import Dict, Optional, Tuple

import hvsandbox

#: What Debian's /usr/bin/python3 needs from the host (read-only).
SYSTEM = {p: p for p in ("/usr", "/lib", "/lib64") if os.path.isdir(p)}

# Imports once, stops at the checkpoint; each run from the snapshot reads
# its code on stdin and runs it in a fresh namespace.
_INTERPRETER = """
import sys, os, json, math, re, collections, itertools
open('/dev/hvsandbox/checkpoint', 'rb').read()
code = sys.stdin.read()
exec(compile(code, '<code>', 'exec'), {'__name__': '__main__'})
"""


class SafePython:
    """Runs Python code in sandboxes; one warm pool per memory size."""

    def __init__(self, python: str = "/usr/bin/python3", pool_size: int = 2) -> None:
        self._python = python
        self._pool_size = pool_size
        self._pools: Dict[Tuple[int, float], hvsandbox.SandboxPool] = {}
        self._lock = threading.Lock()

    def _pool(self, memory: int, timeout: float) -> hvsandbox.SandboxPool:
        key = (memory, timeout)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                with hvsandbox.Sandbox(memory=memory, mounts=SYSTEM, timeout=60) as sb:
                    snap = sb.snapshot([self._python, "-c", _INTERPRETER], point="checkpoint")
                pool = hvsandbox.SandboxPool(snap, size=self._pool_size, timeout=timeout)
                self._pools[key] = pool
            return pool

    def execute(self, code: str, *, timeout: float = 5.0, memory: str = "128M") -> Dict[str, Optional[object]]:
        """Runs ``code``; never raises for what the code does."""
        pool = self._pool(hvsandbox.parse_size(memory), hvsandbox.parse_duration(timeout))
        try:
            r = pool.run(input=code, text=True, errors="replace")
            return {"stdout": r.stdout, "stderr": r.stderr, "exit_code": r.returncode, "error": None}
        except hvsandbox.SandboxError as e:
            out = (e.stdout or b"").decode(errors="replace")
            err = (e.stderr or b"").decode(errors="replace")
            return {"stdout": out, "stderr": err, "exit_code": None, "error": e.code}

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    def __enter__(self) -> "SafePython":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    with SafePython() as py:
        for code in (
            "print(sum(i * i for i in range(10)))",
            "import os; print(sorted(os.listdir('/')))",
            "while True: pass",
            "x = bytearray(1 << 40)",
        ):
            result = py.execute(code, timeout=1)
            print(f"{code!r}\n  -> {json.dumps(result)}")


if __name__ == "__main__":
    main()
