#!/usr/bin/env bash
# Configures and builds longhaul. Usage: scripts/build.sh [release|debug|asan] [extra cmake args...]
#   release -> build/release (default), debug -> build/debug, asan -> build/asan (ASan + UBSan)
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-release}"; shift || true
case "$kind" in
  release) args=(-DCMAKE_BUILD_TYPE=Release) ;;
  debug)   args=(-DCMAKE_BUILD_TYPE=Debug) ;;
  # -g1: line tables only, enough for the sanitizers' stack traces; full -g made the objects 2.6x larger and the
  # build slower.
  asan)    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG"
                 -DLONGHAUL_SANITIZE=ON -DLONGHAUL_BUILD_BENCH=OFF) ;;
  *) echo "usage: scripts/build.sh [release|debug|asan] [cmake args...]" >&2; exit 2 ;;
esac
jobs="${LONGHAUL_JOBS:-$(nproc)}"
cmake -S . -B "build/$kind" "${args[@]}" "$@" >/dev/null
cmake --build "build/$kind" -j "$jobs"
