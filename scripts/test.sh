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
cargo clippy --release --workspace --all-targets -- -D warnings
(cd guest-runtime && cargo clippy --release -- -D warnings)
# The guest runtime's unit tests run on the host (no VM).
(cd guest-runtime && cargo test --lib)
(cd guest-runtime && cargo clippy --lib --tests -- -D warnings)
./bindings/node/test.sh
./bindings/python/test.sh
echo "all tests passed"
