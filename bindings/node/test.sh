#!/usr/bin/env bash
# Builds and tests the npm package `hvsandbox` (called by scripts/test.sh):
# its dev dependencies (typescript, @types/node: npm ci from the lockfile),
# the addon (./build.sh, cargo), rustfmt and clippy on it, then the tests
# with real VMs (node --test: every option and error, streaming, stdin,
# abort, concurrency, the event loop, snapshots and pools, the examples,
# tsc on index.d.ts, and npm pack installed offline into an empty directory).
set -euo pipefail
cd "$(dirname "$0")"

for tool in node npm; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool not found: run ./scripts/install-deps.sh" >&2
        exit 1
    fi
done

npm ci --no-audit --no-fund --loglevel=error
./build.sh
target="${CARGO_TARGET_DIR:-$(cd ../.. && pwd)/target}"
cargo fmt --manifest-path Cargo.toml --check
cargo clippy --release --locked --manifest-path Cargo.toml --target-dir "$target" -- -D warnings
node --test test/
echo "node package: all tests passed"
