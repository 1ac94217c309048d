#!/usr/bin/env bash
# Installs what is needed and runs all tests: unit tests, the KVM boot tests,
# the integration tests (guest programs built from source, Debian's busybox),
# the CLI tests, and clippy with warnings denied on the host and guest crates.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

cargo fmt --all --check
(cd guest-runtime && cargo fmt --check)
cargo build --release --workspace --all-targets
cargo test --release --workspace
# The static CLI a release ships (scripts/build-cli.sh): the tests that run
# the CLI, again against it.
cli=$(./scripts/build-cli.sh)
HVSANDBOX_CLI="$PWD/$cli" cargo test --release -p hvsandbox-tests \
    --test cli --test cli_cold --test cpuid --test eager_rewrite --test rewrite --test fs --test snapshots
cargo clippy --release --workspace --all-targets -- -D warnings
(cd guest-runtime && cargo clippy --release -- -D warnings)
# The guest runtime's unit tests run on the host (no VM).
(cd guest-runtime && cargo test --lib)
(cd guest-runtime && cargo clippy --lib --tests -- -D warnings)
./bindings/node/test.sh
./bindings/python/test.sh
echo "all tests passed"
