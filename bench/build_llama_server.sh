#!/usr/bin/env bash
# Builds llama.cpp's `llama-server`, the reference server of bench/serve_load.py, from the llama.cpp sources that the
# llama-cpp-python 0.3.36 source distribution carries (vendor/llama.cpp): the same llama.cpp the reference checks
# use through llama-cpp-python.
#
# Usage: bench/build_llama_server.sh            -> ~/.cache/longhaul/llama-server/bin/llama-server
#   LONGHAUL_LLAMA_SERVER_DIR=DIR   another cache directory (sdist/, src/, build/, bin/ under it)
#   LONGHAUL_JOBS=N                 parallel compile jobs (default: nproc)
#
# Release, static (one self-contained binary), CPU only: GGML_NATIVE off with the x86 SIMD options switched on
# exactly where /proc/cpuinfo lists them (so the binary uses what longhaul's kernels use on this machine, and the
# choice is written down), AMX off, OpenMP on (llama.cpp's default threading), no curl (models are local files),
# no OpenSSL, no web UI (it would be fetched from the network). Idempotent: a binary built with the same version
# and options is kept; the download and the unpacked sources are reused.
set -euo pipefail

version=0.3.36
root="${LONGHAUL_LLAMA_SERVER_DIR:-$HOME/.cache/longhaul/llama-server}"
jobs="${LONGHAUL_JOBS:-$(nproc)}"
sdist="$root/sdist/llama_cpp_python-$version.tar.gz"
src="$root/src/llama_cpp_python-$version/vendor/llama.cpp"
build="$root/build"
bin="$root/bin/llama-server"

cpu_has() { grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -qx "$1"; }
on_if() { if cpu_has "$1"; then echo ON; else echo OFF; fi; }

options=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
  -DGGML_NATIVE=OFF -DGGML_OPENMP=ON
  -DGGML_AVX="$(on_if avx)" -DGGML_AVX2="$(on_if avx2)" -DGGML_FMA="$(on_if fma)" -DGGML_F16C="$(on_if f16c)"
  -DGGML_BMI2="$(on_if bmi2)" -DGGML_AVX_VNNI="$(on_if avx_vnni)"
  -DGGML_AVX512="$(on_if avx512f)" -DGGML_AVX512_VBMI="$(on_if avx512vbmi)"
  -DGGML_AVX512_VNNI="$(on_if avx512_vnni)" -DGGML_AVX512_BF16="$(on_if avx512_bf16)"
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
)
stamp="llama-cpp-python $version: ${options[*]}"

if [[ -x "$bin" && -f "$bin.stamp" && "$(cat "$bin.stamp")" == "$stamp" ]]; then
  echo "llama-server is up to date: $bin"
  exit 0
fi

if [[ ! -f "$sdist" ]]; then
  mkdir -p "$(dirname "$sdist")"
  python3 -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
    "llama-cpp-python==$version" -d "$(dirname "$sdist")"
fi
if [[ ! -f "$src/tools/server/CMakeLists.txt" ]]; then
  rm -rf "$root/src"
  mkdir -p "$root/src"
  tar xzf "$sdist" -C "$root/src"
fi

echo "building llama-server ($jobs jobs): ${options[*]}" >&2
cmake -S "$src" -B "$build" "${options[@]}" >/dev/null
cmake --build "$build" --target llama-server -j "$jobs"
mkdir -p "$(dirname "$bin")"
cp "$build/bin/llama-server" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$stamp" >"$bin.stamp"
echo "llama-server: $bin"
