#!/usr/bin/env bash
# Builds the libFuzzer drivers with clang and fuzzes the GGUF reader for N seconds (default 60), starting from the
# generated seed corpus and tests/testdata/gguf_corpus, then the head profile parser and the server's request
# parser for N / 3 seconds each.
# Exits non-zero on a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not installed (scripts/setup.sh installs it)" >&2; exit 1; }
CC=clang CXX=clang++ cmake -S . -B build/fuzz -DLONGHAUL_BUILD_FUZZ=ON -DLONGHAUL_BUILD_TESTS=OFF \
  -DLONGHAUL_BUILD_BENCH=OFF >/dev/null
cmake --build build/fuzz --target gguf_fuzz gguf_fuzz_seeds head_profile_fuzz request_parser_fuzz -j "$(nproc)"
work=$(mktemp -d)
build/fuzz/tests/fuzz/gguf_fuzz_seeds "$work/seeds" >/dev/null
mkdir -p "$work/corpus" "$work/artifacts"
build/fuzz/tests/fuzz/gguf_fuzz "$work/corpus" "$work/seeds" tests/testdata/gguf_corpus \
  -dict=tests/fuzz/gguf.dict -max_total_time="$seconds" -max_len=16384 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" 2>&1 | tail -n 12
# A valid profile and the committed corpus (both sections, broken ones) as the seeds of the head profile parser.
mkdir -p "$work/hp_corpus" "$work/hp_seeds"
printf 'longhaul-head-profile 1\nmodel m.gguf\nn_layer 2\nn_head_kv 2\n# layer head score needle induction echo\n0 0 0.5 0.5 0 0\n0 1 0.1 0.1 0 0\n1 0 0.2 0 0.2 0\n1 1 0.3 0 0 0.3\n' \
  > "$work/hp_seeds/valid.heads"
build/fuzz/tests/fuzz/head_profile_fuzz "$work/hp_corpus" "$work/hp_seeds" tests/testdata/head_profile_corpus -dict=tests/fuzz/head_profile.dict \
  -max_total_time="$(( (seconds + 2) / 3 ))" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" 2>&1 | tail -n 12
# Request bodies as the openai client sends them, as seeds of the server's request parser.
mkdir -p "$work/rp_corpus" "$work/rp_seeds"
printf '%s' '{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_tokens":8,"temperature":0.5,"top_p":0.9,"seed":1,"stop":["\n"],"n":2,"stream":true,"stream_options":{"include_usage":true},"logprobs":true,"top_logprobs":2,"kv_policy":"h2o:budget=64"}' \
  > "$work/rp_seeds/chat.json"
printf '%s' '{"model":"m","prompt":[[1,2],[3]],"max_tokens":4,"logprobs":1,"echo":false,"presence_penalty":1}' > "$work/rp_seeds/completion.json"
printf '%s' '{"model":"m","input":["a","b"],"encoding_format":"base64"}' > "$work/rp_seeds/embedding.json"
printf '%s' '{"content":"hi","add_special":true,"with_pieces":true,"tokens":[1,2]}' > "$work/rp_seeds/tokenize.json"
build/fuzz/tests/fuzz/request_parser_fuzz "$work/rp_corpus" "$work/rp_seeds" -dict=tests/fuzz/request_parser.dict \
  -max_total_time="$(( (seconds + 2) / 3 ))" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" 2>&1 | tail -n 12
rm -rf "$work"
