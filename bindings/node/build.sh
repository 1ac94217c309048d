#!/usr/bin/env bash
# Builds the addon (cargo, release) and places it where index.js loads it:
# hvsandbox.linux-x64-gnu.node, without its debug information (the npm
# tarball stays small). Uses the repository's target directory, so the
# hvsandbox crates compiled for the root workspace are reused.
set -euo pipefail
cd "$(dirname "$0")"
target="${CARGO_TARGET_DIR:-$(cd ../.. && pwd)/target}"
cargo build --release --locked --manifest-path Cargo.toml --target-dir "$target"
objcopy --strip-debug "$target/release/libhvsandbox_node.so" hvsandbox.linux-x64-gnu.node.tmp
mv hvsandbox.linux-x64-gnu.node.tmp hvsandbox.linux-x64-gnu.node
