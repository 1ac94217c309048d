#!/usr/bin/env bash
# Builds the hvsandbox CLI as one static executable, glibc and libcap-ng
# linked in: what a release ships (no shared libraries to install beside
# it). It also starts sooner than the dynamically linked build `cargo
# build` makes: no loader, no libraries to map and relocate (~0.5 ms of a
# ~6 ms cold `hvsandbox run -- busybox true` here). Prints its path last.
#   ./scripts/build-cli.sh        # target/x86_64-unknown-linux-gnu/release/hvsandbox
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
archive=$(gcc -print-file-name=libcap-ng.a)
if [ ! -f "$archive" ]; then
    echo "build-cli: libcap-ng.a not found (install libcap-ng-dev)" >&2
    exit 1
fi
# --target keeps RUSTFLAGS off build scripts and proc macros (they stay
# dynamic); the capng crate links libcap-ng statically when asked to.
LIBCAPNG_LINK_TYPE=static LIBCAPNG_LIB_PATH=$(dirname "$archive") \
    RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p hvsandbox --bin hvsandbox --target "$target" >&2
cli=target/$target/release/hvsandbox
if readelf -d "$cli" | grep -q NEEDED; then
    echo "build-cli: $cli still needs shared libraries:" >&2
    readelf -d "$cli" | grep NEEDED >&2
    exit 1
fi
echo "$cli"
