#!/usr/bin/env python3
"""Speculative decoding: longhaul's draft sources next to plain decoding and llama.cpp's prompt lookup.

Three workloads, their prompts committed in bench/speculative_prompts/:
  input-grounded  answer questions by quoting a ~900-token incident report (input_grounded.txt, through --chat:
                  as a bare completion after "Answers, quoting the report: 1." SmolLM2 only counted "2. 3. 4. ...")
  code-editing    reproduce a 50-line Python function with one parameter renamed (code_editing.txt)
  open-ended      plan a weekend trip, a chat turn with nothing to quote (chat.txt, through --chat)
For every model and workload, every longhaul --spec-type (none, ngram, recycle, aded, retrieval, self) runs
    longhaul run -m MODEL -f PROMPT -n N --temp 0 --ignore-eos --json -t T --spec-type S [--chat]
and llama.cpp runs the same prompt text through llama-cpp-python's high-level API twice, plain and with
LlamaPromptLookupDecoding (num_pred_tokens = --llama-pred, max_ngram_size = 2, its defaults otherwise), greedy,
max_tokens = N, in its own process (python3 speculative.py --llama-worker ...). The figure is end-to-end
    generated tokens / (prefill + generation seconds)
of each run (longhaul: prompt_seconds + generate_seconds of --json; llama.cpp: the wall time of
create_completion), so both engines are timed from the prompt to the last token; and the decode figure
    (generated tokens - 1) / (seconds from the first generated token to the last)
which leaves out the prefill that speculation cannot change (longhaul: generate_seconds; llama.cpp: streamed, from
the first chunk to the last). Mean accepted length is
tokens per decode step (1 = no gain), from longhaul's --json; the speed-up of each row is against plain
decoding of the same engine in the same round. Engines and settings alternate within each round, so a burst of
load from other jobs hits all of them. The greedy outputs are compared with longhaul's --spec-type none (mean
common prefix in tokens): speculation must not change them beyond rounding of near ties.

Usage (from the repository root, after scripts/build.sh release), on an otherwise idle machine:
  python3 bench/speculative.py --models smollm2-135m,gemma3-270m --threads 2 -n 256 --rounds 3
  python3 bench/speculative.py --models smollm2-135m -n 8 --rounds 1 --no-llama     # smoke run
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHORT_NAMES = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3-270m": "gemma-3-270m-q4_k_m.gguf",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = os.path.join(ROOT, "bench", "speculative_prompts")
WORKLOADS = [  # name, prompt file, through the chat format
    ("input-grounded", "input_grounded.txt", True),
    ("code-editing", "code_editing.txt", False),
    ("open-ended", "chat.txt", True),
]


def models_dir():
    return os.environ.get("LONGHAUL_MODELS") or os.path.join(os.path.expanduser("~"), ".cache", "longhaul", "models")


def resolve_model(name):
    return os.path.join(models_dir(), SHORT_NAMES[name]) if name in SHORT_NAMES else name


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def run_longhaul(binary, model, path, chat, spec, args):
    # "ngram" drafts adaptive lengths up to --draft-max; "ngram@fixed" always --draft-max, "ngram@fixed4" always 4.
    spec, _, variant = spec.partition("@")
    draft_max = args.draft_max
    if variant:
        if not variant.startswith("fixed"):
            raise SystemExit(f"unknown variant @{variant} (known: @fixed, @fixedN)")
        if variant != "fixed":
            draft_max = int(variant[len("fixed"):])
    cmd = [binary, "run", "-m", model, "-f", path, "-n", str(args.n_gen), "--temp", "0", "--ignore-eos", "--json",
           "-t", str(args.threads), "-c", "4096", "--spec-type", spec, "--draft-max", str(draft_max)]
    if variant:
        cmd.append("--draft-fixed")
    if chat:
        cmd.append("--chat")
    if spec == "self" and args.draft_skip is not None:
        cmd += ["--draft-skip", str(args.draft_skip)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    j = json.loads(out.stdout)
    t = j["timings"]
    seconds = t["prompt_seconds"] + t["generate_seconds"]
    spec_stats = j.get("speculative", {})
    return {"tokens": j["tokens"], "tps": t["generated_tokens"] / seconds if seconds > 0 else 0.0,
            "decode_tps": decode_tps(t["generated_tokens"], t["generate_seconds"]),
            "mal": spec_stats.get("mean_accepted_length", 1.0)}


def decode_tps(n_generated, seconds_after_first):
    """Tokens per second after the first generated token (which the prefill's logits give)."""
    return (n_generated - 1) / seconds_after_first if n_generated > 1 and seconds_after_first > 0 else 0.0


# llama.cpp worker: its own process, so its threads and memory do not mix with the driver's.
def llama_worker(args):
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # numpy's OpenBLAS pool would compete for the cores
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    text = open(args.prompt_file).read()
    draft = LlamaPromptLookupDecoding(num_pred_tokens=args.llama_pred) if args.lookup else None
    # With a draft model llama-cpp-python verifies several tokens per eval and reads all their logits: logits_all.
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads,
                          draft_model=draft, logits_all=args.lookup, verbose=False)
    # As longhaul's --ignore-eos: max_tokens tokens every time (the end-of-generation tokens are never picked).
    ignore_eos = {t: -1e9 for t in (llm._model.token_eos(), llm._model.token_eot()) if t >= 0}
    # Streamed, so the first chunk marks the end of the prefill; each completion chunk is one token.
    t0 = time.perf_counter()
    if args.chat:
        chunks = llm.create_chat_completion(messages=[{"role": "user", "content": text}], max_tokens=args.n_gen,
                                            temperature=0.0, logit_bias=ignore_eos, stream=True)
    else:
        chunks = llm.create_completion(text, max_tokens=args.n_gen, temperature=0.0, logit_bias=ignore_eos,
                                       stream=True)
    t_first = None
    n = 0
    for chunk in chunks:
        if t_first is None:
            t_first = time.perf_counter()
        choice = chunk["choices"][0]
        # Chat streams open with a role-only delta and close with an empty one carrying finish_reason.
        if "text" in choice or choice.get("delta", {}).get("content") is not None:
            n += 1
    t_end = time.perf_counter()
    seconds = t_end - t0
    print(json.dumps({"tps": n / seconds if seconds > 0 else 0.0,
                      "decode_tps": decode_tps(n, t_end - t_first if t_first is not None else 0.0), "n": n}))


def run_llama(model, path, chat, lookup, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--llama-worker", "--model", model, "--prompt-file", path,
           "-n", str(args.n_gen), "--threads", str(args.threads), "--llama-pred", str(args.llama_pred)]
    if chat:
        cmd.append("--chat")
    if lookup:
        cmd.append("--lookup")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="smollm2-135m,gemma3-270m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-n", "--n-gen", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--spec-types", default="none,ngram,recycle,aded,retrieval,self",
                   help="comma list; NAME drafts adaptive lengths up to --draft-max, NAME@fixed always --draft-max "
                        "(--draft-fixed), NAME@fixedN always N")
    p.add_argument("--draft-skip", type=int, help="sub-layers the self draft leaves out (default: the profile's)")
    p.add_argument("--workloads", default=",".join(w[0] for w in WORKLOADS), help="comma list")
    p.add_argument("--draft-max", type=int, default=16)
    p.add_argument("--llama-pred", type=int, default=10, help="LlamaPromptLookupDecoding's num_pred_tokens")
    p.add_argument("--no-llama", action="store_true", help="leave llama.cpp out")
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "release", "cli", "longhaul"))
    # worker mode
    p.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--prompt-file", help=argparse.SUPPRESS)
    p.add_argument("--chat", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lookup", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.llama_worker:
        return llama_worker(args)

    with_llama = not args.no_llama
    if with_llama:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            print("llama-cpp-python is not installed: llama.cpp rows left out", file=sys.stderr)
            with_llama = False
    specs = [s for s in args.spec_types.split(",") if s]
    print("| model | workload | engine | tokens/s | speed-up | decode tokens/s | decode speed-up | "
          "mean accepted length | same output (tokens) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        model = resolve_model(name)
        for workload, file_name, chat in [w for w in WORKLOADS if w[0] in args.workloads.split(",")]:
            path = os.path.join(PROMPTS, file_name)
            rows = {}  # engine -> [(tps, mal, prefix, speed-up, decode tps, decode speed-up)]
            for round_index in range(args.rounds):
                plain = None
                for spec in specs:
                    print(f"{name} {workload} round {round_index + 1}/{args.rounds}: longhaul {spec}",
                          file=sys.stderr, flush=True)
                    r = run_longhaul(args.binary, model, path, chat, spec, args)
                    if plain is None:  # the first type, none by default, is the reference
                        plain = r
                    rows.setdefault(f"longhaul {spec}", []).append(
                        (r["tps"], r["mal"], common_prefix(r["tokens"], plain["tokens"]), r["tps"] / plain["tps"],
                         r["decode_tps"], r["decode_tps"] / plain["decode_tps"]))
                if with_llama:
                    print(f"{name} {workload} round {round_index + 1}/{args.rounds}: llama.cpp",
                          file=sys.stderr, flush=True)
                    base = run_llama(model, path, chat, False, args)
                    look = run_llama(model, path, chat, True, args)
                    nan = float("nan")
                    rows.setdefault("llama.cpp", []).append((base["tps"], nan, nan, 1.0, base["decode_tps"], 1.0))
                    rows.setdefault("llama.cpp prompt lookup", []).append(
                        (look["tps"], nan, nan, look["tps"] / base["tps"] if base["tps"] else nan, look["decode_tps"],
                         look["decode_tps"] / base["decode_tps"] if base["decode_tps"] else nan))
            for engine, values in rows.items():
                tps = statistics.mean(v[0] for v in values)
                mal = statistics.mean(v[1] for v in values)
                prefix = statistics.mean(v[2] for v in values)
                speedup = statistics.mean(v[3] for v in values)
                decode = statistics.mean(v[4] for v in values)
                decode_speedup = statistics.mean(v[5] for v in values)
                print(f"| {name} | {workload} | {engine} | {tps:.1f} | {speedup:.2f}x | {decode:.1f} | {decode_speedup:.2f}x | "
                      f"{'' if mal != mal else f'{mal:.2f}'} | {'' if prefix != prefix else f'{prefix:.0f}/{args.n_gen}'} |")
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
