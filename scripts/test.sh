#!/usr/bin/env bash
# Sets up a fresh machine (packages, models), builds, and runs every test:
# the Release build's full suite, then the ASan + UBSan build's suite.
#   LONGHAUL_SKIP_ASAN=1  skip the sanitizer build (faster local runs)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh release
ctest --test-dir build/release --output-on-failure -j "$(nproc)"
if [ "${LONGHAUL_SKIP_ASAN:-0}" != 1 ]; then
  bash scripts/build.sh asan
  # ASan keeps its own allocator; the models' mmap is unaffected. Leak checks stay on.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/asan --output-on-failure -j "$(nproc)"
fi
