#!/usr/bin/env bash
# Builds the libFuzzer driver for the GGUF reader with clang and fuzzes for N seconds (default 60),
# starting from the generated seed corpus and tests/testdata/gguf_corpus. Exits non-zero on a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not installed (scripts/setup.sh installs it)" >&2; exit 1; }
CC=clang CXX=clang++ cmake -S . -B build/fuzz -DLONGHAUL_BUILD_FUZZ=ON -DLONGHAUL_BUILD_TESTS=OFF \
  -DLONGHAUL_BUILD_BENCH=OFF >/dev/null
cmake --build build/fuzz --target gguf_fuzz gguf_fuzz_seeds -j "$(nproc)"
work=$(mktemp -d)
build/fuzz/tests/fuzz/gguf_fuzz_seeds "$work/seeds" >/dev/null
mkdir -p "$work/corpus" "$work/artifacts"
build/fuzz/tests/fuzz/gguf_fuzz "$work/corpus" "$work/seeds" tests/testdata/gguf_corpus \
  -dict=tests/fuzz/gguf.dict -max_total_time="$seconds" -max_len=16384 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" 2>&1 | tail -n 12
rm -rf "$work"
