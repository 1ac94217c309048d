#!/usr/bin/env bash
# Installs what is needed, builds the hvsandbox CLI (static) and runs programs in
# sandboxes: a C hello world built with musl-gcc, and Debian's busybox.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
# The CLI as a release ships it: one static executable.
hv=$(./scripts/build-cli.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/hello.c" <<'C'
#include <stdio.h>
int main(int argc, char **argv) {
    printf("hello from a micro-VM: %s\n", argc > 1 ? argv[1] : "(no args)");
    return 0;
}
C
musl-gcc -static -O2 -o "$work/hello" "$work/hello.c"

set -x
"$hv" run -- "$work/hello" world
"$hv" run --memory 32M --timeout 2s -- /bin/busybox echo hi from busybox
printf 'one\ntwo\nthree\n' | "$hv" run -- /bin/busybox wc -l
"$hv" run --stats -- /bin/busybox sh -c 'exit 3' || echo "exit status: $?"
# A server keeps VMs ready; from a program's second run on, its runs start
# from warm clones of its entry snapshot (--log-runs says which).
"$hv" serve --socket "$work/hv.sock" --log-runs &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 200); do [ -S "$work/hv.sock" ] && break; sleep 0.05; done
for i in 1 2 3; do "$hv" run --server "$work/hv.sock" -- /bin/busybox echo "served $i"; sleep 0.2; done
kill "$server"
wait "$server"
