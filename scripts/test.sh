#!/usr/bin/env bash
# Sets up a fresh machine (packages, models), builds, and runs every test:
# a short fuzz run of the GGUF reader, the Release build's suite, then the ASan + UBSan build's suite.
#   LONGHAUL_SKIP_ASAN=1   skip the sanitizer build (faster local runs)
#   LONGHAUL_FUZZ_SECONDS  length of the GGUF fuzz run (default 30; 0 = skip)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
fuzz_seconds="${LONGHAUL_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ]; then
  bash scripts/fuzz.sh "$fuzz_seconds"
fi
bash scripts/build.sh release
ctest --test-dir build/release --output-on-failure -j "$(nproc)"
if [ "${LONGHAUL_SKIP_ASAN:-0}" != 1 ]; then
  bash scripts/build.sh asan
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/asan --output-on-failure -j "$(nproc)"
fi
