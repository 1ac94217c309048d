#!/usr/bin/env bash
# Installs the system packages hvsandbox's demo and tests need, if missing:
# musl-tools (musl-gcc for the C guest test programs), busybox-static
# (Debian's static glibc busybox, a real-world guest), libcap-ng-dev and
# python3-venv (the Python package's tests; Debian's python3 is also a
# guest); nodejs and npm when node is missing (the npm package's tests).
# Idempotent; runs apt-get update at most once.
set -euo pipefail

packages=(musl-tools busybox-static libcap-ng-dev python3-venv)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

# Node and npm, for the npm package's tests (bindings/node/test.sh).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    missing+=(nodejs npm)
fi

if ((${#missing[@]})); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    echo "installing: ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install a Rust toolchain (https://rustup.rs)" >&2
    exit 1
fi
if [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
    echo "warning: /dev/kvm is missing or not accessible to $(id -un); add yourself to the 'kvm' group" >&2
fi
