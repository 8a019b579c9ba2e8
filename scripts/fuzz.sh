#!/usr/bin/env bash
# Builds the libFuzzer drivers with clang and fuzzes the GGUF reader for N seconds (default 60), starting from the
# generated seed corpus and tests/testdata/gguf_corpus, then the head profile parser for N / 3 seconds.
# Exits non-zero on a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not installed (scripts/setup.sh installs it)" >&2; exit 1; }
CC=clang CXX=clang++ cmake -S . -B build/fuzz -DLONGHAUL_BUILD_FUZZ=ON -DLONGHAUL_BUILD_TESTS=OFF \
  -DLONGHAUL_BUILD_BENCH=OFF >/dev/null
cmake --build build/fuzz --target gguf_fuzz gguf_fuzz_seeds head_profile_fuzz -j "$(nproc)"
work=$(mktemp -d)
build/fuzz/tests/fuzz/gguf_fuzz_seeds "$work/seeds" >/dev/null
mkdir -p "$work/corpus" "$work/artifacts"
build/fuzz/tests/fuzz/gguf_fuzz "$work/corpus" "$work/seeds" tests/testdata/gguf_corpus \
  -dict=tests/fuzz/gguf.dict -max_total_time="$seconds" -max_len=16384 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" 2>&1 | tail -n 12
# A valid profile as the seed of the head profile parser.
mkdir -p "$work/hp_corpus" "$work/hp_seeds"
printf 'longhaul-head-profile 1\nmodel m.gguf\nn_layer 2\nn_head_kv 2\n# layer head score needle induction echo\n0 0 0.5 0.5 0 0\n0 1 0.1 0.1 0 0\n1 0 0.2 0 0.2 0\n1 1 0.3 0 0 0.3\n' \
  > "$work/hp_seeds/valid.heads"
build/fuzz/tests/fuzz/head_profile_fuzz "$work/hp_corpus" "$work/hp_seeds" -dict=tests/fuzz/head_profile.dict \
  -max_total_time="$(( (seconds + 2) / 3 ))" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" 2>&1 | tail -n 12
rm -rf "$work"
