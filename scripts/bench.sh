#!/usr/bin/env bash
# Runs every benchmark and writes BENCHMARKS.md with the commands and the
# figures. Each figure is printed beside its baseline measured in the same
# run (fork+exec of the same binary, or the native interpreter).
#   ./scripts/bench.sh            # full runs (a few minutes)
#   ./scripts/bench.sh --quick    # fewer runs
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
mode=("$@")
cargo build --release --workspace --all-targets >/dev/null
# The cli bench times the static CLI a release ships.
HVSANDBOX_CLI="$PWD/$(./scripts/build-cli.sh 2>/dev/null)"
export HVSANDBOX_CLI

out=BENCHMARKS.md
tmp=$(mktemp)
{
    echo "# Benchmarks"
    echo
    echo "Regenerate with \`./scripts/bench.sh\` (\`--quick\` for fewer runs). Figures are"
    echo "medians (and p99) of interleaved runs, each beside its baseline measured in"
    echo "the same process: fork+exec of the same static binary, or the native"
    echo "interpreter. These shared 2-core machines are noisy: compare the ratios."
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- host: $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    for bench in cold_start processes warm scale streaming threads vdso process_pool cli; do
        echo
        echo "## \`cargo bench -p hvsandbox-tests --bench $bench -- ${mode[*]:-}\`"
        echo
        echo '```'
        cargo bench -q -p hvsandbox-tests --bench "$bench" -- "${mode[@]}" 2>/dev/null
        echo '```'
    done
} > "$tmp"
mv "$tmp" "$out"
echo "wrote $out"
