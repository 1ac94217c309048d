"""examples/python/safe_exec.py: the "execute this code safely" helper."""

from __future__ import annotations

import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[3] / "examples" / "python" / "safe_exec.py"


def _load():
    spec = importlib.util.spec_from_file_location("safe_exec", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_safe_python_returns_output_status_and_error_codes():
    demo = _load()
    with demo.SafePython(pool_size=1) as py:
        assert py.execute("import json, math\nprint(json.dumps({'a': math.factorial(5)}))") == {
            "stdout": '{"a": 120}\n',
            "stderr": "",
            "exit_code": 0,
            "error": None,
        }
        r = py.execute("import sys; print('x'); sys.exit(3)")
        assert (r["stdout"], r["exit_code"], r["error"]) == ("x\n", 3, None)
        r = py.execute("print('spin', flush=True)\nwhile True: pass", timeout=0.5)
        assert (r["stdout"], r["exit_code"], r["error"]) == ("spin\n", None, "TIMEOUT")
        r = py.execute("raise ValueError('boom')")
        assert r["exit_code"] == 1 and "ValueError: boom" in r["stderr"]
        # Each call starts from the checkpoint: nothing carries over.
        py.execute("open('/tmp/state', 'w').write('1')")
        assert py.execute("import os; print(os.path.exists('/tmp/state'))")["stdout"] == "False\n"
        r = py.execute(
            "import mmap\nms=[mmap.mmap(-1, 16<<20) for _ in range(4)]\nfor m in ms: m[::4096] = b'x' * (len(m)//4096)",
            memory="64M",
        )
        assert r["error"] == "MEMORY_LIMIT_EXCEEDED"


def test_the_demo_runs():
    demo = _load()
    demo.main()
