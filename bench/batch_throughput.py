#!/usr/bin/env python3
"""Multi-sequence generation throughput: `longhaul batch` next to llama.cpp's batched decoding.

For every --parallel N, both engines get exactly the same N prompts (the first N of PROMPTS below) and
generate --n-gen tokens for each of them, greedily, past any end-of-generation token; the figure is
    total generated tokens (N x n_gen) / wall time of the whole generation,
prefill of the N short prompts included (model load and context/engine creation excluded on both sides).
Every run is one wave: N prompts on N sequences, so neither engine waits for a straggler or refills a
free place (longhaul's continuous batching has nothing to refill here; llama.cpp has no scheduler).

longhaul: `longhaul batch -m MODEL -f prompts.jsonl -o out.jsonl --parallel N -t T -n n_gen --ignore-eos
--temp 0 -c C`; the rate is the "tokens/s" of its closing stderr line (generated tokens / seconds from the
first step to the last result written, after the engine is created).

llama.cpp, through llama-cpp-python's low-level API in its own process (python3 batch_throughput.py
--llama-worker ...): one llama_context with n_seq_max = N, n_ctx = N x C, n_batch = n_ubatch >= all
prompt tokens, n_threads = n_threads_batch = T, K/V f16, flash attention off unless --flash-attn says
otherwise, K/V per sequence (kv_unified false, llama.cpp's default) unless --kv-unified. The clock starts
before one llama_batch that carries the N prompts' tokens with their seq ids (logits for each prompt's
last token) and stops after the last argmax; in between, n_gen - 1 llama_batches each carry one token per
sequence (the token just chosen, llama_get_logits_ith + argmax). That is the same number of forward
steps as longhaul: the prefill step yields the first token, every decode step one more, and the
n_gen-th token is not fed back (nothing would read its logits).

Same input ids: longhaul tokenizes the prompt text of the JSONL (`longhaul tokenize`, BOS where the
model asks for it, no control-token parsing), and the worker feeds exactly those ids to llama.cpp; the
script also reports whether llama.cpp's own tokenizer (llama_tokenize, add_special, no parse_special)
gives the same ids. As a check that both engines did the same work, it compares the greedy tokens: the
mean length of the common prefix of the two engines' outputs per sequence (quantized kernels differ in
rounding, so long greedy runs may part, but a broken batch would part at token 1).

Engines alternate run by run (llama.cpp, then longhaul, for each N) for --rounds rounds, so a burst
of load from other jobs hits both. The table gives per N the mean t/s (min-max over rounds) of each
engine, the ratio longhaul / llama.cpp (mean of per-round ratios, min-max), each engine's speed-up
over its own N = 1 rate (means), and cores busy = CPU seconds / wall seconds of each whole process.

Usage (from the repository root, after scripts/build.sh release):
  python3 bench/batch_throughput.py --models smollm2-135m --threads 2 --parallel 1,2,4,8,16 --rounds 2
  python3 bench/batch_throughput.py --models smollm2-135m,gemma3-270m -n 8 --rounds 1   # smoke run
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

DISPLAY_NAMES = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": "SmolLM2-135M Q4_1",
    "SmolLM2-135M-Instruct.Q8_0.gguf": "SmolLM2-135M Q8_0",
    "gemma-3-270m-q4_k_m.gguf": "Gemma 3 270M Q4_K_M",
}
SHORT_NAMES = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "smollm2-135m-q8": "SmolLM2-135M-Instruct.Q8_0.gguf",
    "gemma3-270m": "gemma-3-270m-q4_k_m.gguf",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Fixed prompts, 14-23 tokens each (BOS included) with the SmolLM2 and Gemma 3 tokenizers; run N takes the first N.
PROMPTS = [
    "The history of the printing press begins in the fifteenth century, when a goldsmith in Mainz",
    "Write a short story about a lighthouse keeper who finds a message in a bottle on a stormy night.",
    "Explain in simple words why the sky is blue during the day and red at sunset.",
    "A recipe for a quick vegetable soup: first chop two onions, three carrots and a stick of celery, then",
    "The three most important ideas in the theory of evolution by natural selection are",
    "Dear hiring manager, I am writing to apply for the position of junior software engineer because",
    "In the year 2150, the first colony on Mars celebrated its fiftieth anniversary with",
    "List five tips for getting a good night's sleep and explain each one briefly.",
    "The old train station at the edge of town had been closed for decades until one morning",
    "How does a refrigerator keep food cold? Describe the cycle of the refrigerant step by step.",
    "Once upon a time, in a kingdom surrounded by tall mountains, there lived a curious young princess who",
    "Summarize the main causes of the French Revolution in a few sentences for a student.",
    "The best way to learn a new programming language is to start with a small project, such as",
    "My grandmother's garden was full of tomatoes, roses and an old apple tree that",
    "Describe the water cycle, from evaporation over the ocean to rain falling on the mountains.",
    "The committee met on Tuesday to discuss the budget for next year, and the first question was",
    "Why do cats purr? Scientists have several theories, and the most widely accepted one says",
    "Photosynthesis is the process by which green plants turn sunlight, water and carbon dioxide into",
    "Give three arguments for and three arguments against working from home.",
    "The detective looked at the muddy footprints leading away from the window and said",
    "To build a simple wooden bookshelf you will need the following tools and materials:",
    "The Great Wall of China was built over many centuries, and its purpose was",
    "Translate the following idea into plain English: the mitochondria is the powerhouse of the cell.",
    "On the first day of school, the new teacher walked into the classroom and wrote on the board",
    "The difference between weather and climate is often misunderstood, so let us start with",
    "A good breakfast gives you energy for the whole morning, for example oatmeal with",
    "The spaceship's engines fell silent as the crew looked out at the unknown planet below, and",
    "What are the advantages of electric cars compared with cars that burn petrol or diesel?",
    "In a small village by the sea, the fishermen gathered every evening to tell stories about",
    "The rules of chess are simple to learn: each player starts with sixteen pieces, namely",
    "Write a polite email to a neighbour asking them to keep their dog quiet at night.",
    "The museum's newest exhibition shows paintings from the early twentieth century, including",
]


def models_dir():
    return os.environ.get("LONGHAUL_MODELS") or os.path.join(os.path.expanduser("~"), ".cache", "longhaul", "models")


def resolve_model(name):
    if name in SHORT_NAMES:
        return os.path.join(models_dir(), SHORT_NAMES[name])
    return name


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip() != ""]


def round_up(x, m):
    return (x + m - 1) // m * m


# ---------------------------------------------------------------------------------------------
# llama.cpp worker: its own process; reads the prompt ids from a JSON file, prints one JSON result.
# ---------------------------------------------------------------------------------------------
def llama_worker(args):
    # llama_cpp imports numpy, whose OpenBLAS would start a pool of worker threads that compete for the cores.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import ctypes
    import numpy as np
    import llama_cpp as lc

    @lc.llama_log_callback
    def quiet(level, text, user_data):
        pass

    lc.llama_log_set(quiet, None)
    lc.llama_backend_init()
    spec = json.load(open(args.ids_file))
    prompts = spec["ids"]          # [N][prompt tokens]
    texts = spec["texts"]          # [N]
    n_seq = len(prompts)
    n_gen = args.n_gen
    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = lc.llama_model_load_from_file(args.model.encode(), mparams)
    if not model:
        print(f"llama worker: cannot load {args.model}", file=sys.stderr)
        return 1
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)

    # Does llama.cpp's own tokenizer give the ids longhaul gave? (The run uses longhaul's either way.)
    same_ids = 0
    for text, ids in zip(texts, prompts):
        raw = text.encode()
        buf = (lc.llama_token * (len(raw) + 16))()
        n = lc.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, False)
        same_ids += int(n >= 0 and list(buf[:n]) == ids)

    n_prompt_total = sum(len(p) for p in prompts)
    fa = {"off": lc.LLAMA_FLASH_ATTN_TYPE_DISABLED, "on": lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
          "auto": lc.LLAMA_FLASH_ATTN_TYPE_AUTO}[args.flash_attn]
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = n_seq * args.ctx_per_seq
    cparams.n_batch = max(512, round_up(n_prompt_total, 64))
    cparams.n_ubatch = cparams.n_batch
    cparams.n_seq_max = n_seq
    cparams.n_threads = args.threads
    cparams.n_threads_batch = args.threads
    cparams.flash_attn_type = fa
    cparams.type_k = 1  # GGML_TYPE_F16
    cparams.type_v = 1
    cparams.kv_unified = args.kv_unified
    cparams.no_perf = True
    ctx = lc.llama_init_from_model(model, cparams)
    if not ctx:
        print(f"llama worker: cannot create a context for {n_seq} sequences", file=sys.stderr)
        return 1

    batch = lc.llama_batch_init(max(n_prompt_total, n_seq), 0, 1)

    def argmax(i):
        return int(np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).argmax())

    out = [[] for _ in range(n_seq)]
    t0 = time.perf_counter()
    c0 = time.process_time()
    # Prefill: every prompt's tokens in one batch, each with its sequence id; logits for each last token.
    k = 0
    last = []
    for s, ids in enumerate(prompts):
        for j, tok in enumerate(ids):
            batch.token[k] = tok
            batch.pos[k] = j
            batch.n_seq_id[k] = 1
            batch.seq_id[k][0] = s
            batch.logits[k] = 1 if j == len(ids) - 1 else 0
            k += 1
        last.append(k - 1)
    batch.n_tokens = k
    rc = lc.llama_decode(ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode (prefill) returned {rc}")
    for s in range(n_seq):
        out[s].append(argmax(last[s]))
    prefill_seconds = time.perf_counter() - t0
    # Decode: one token per sequence per step; the n_gen-th token is chosen but not fed back.
    for step in range(1, n_gen):
        for s in range(n_seq):
            batch.token[s] = out[s][-1]
            batch.pos[s] = len(prompts[s]) + step - 1
            batch.n_seq_id[s] = 1
            batch.seq_id[s][0] = s
            batch.logits[s] = 1
        batch.n_tokens = n_seq
        rc = lc.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode (step {step}) returned {rc}")
        for s in range(n_seq):
            out[s].append(argmax(s))
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    n_generated = n_seq * n_gen
    print(json.dumps({
        "tokens_per_s": n_generated / seconds, "seconds": seconds, "cpu_seconds": cpu_seconds,
        "prefill_seconds": prefill_seconds,
        "generated": n_generated, "prompt_tokens": n_prompt_total, "same_prompt_ids": same_ids,
        "tokens": out, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "n_ctx": cparams.n_ctx, "n_batch": cparams.n_batch,
    }))
    return 0


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def loadavg():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return ["?", "?", "?"]


def timed_child(cmd):
    """Runs cmd; returns (stdout, stderr, wall seconds, CPU seconds of the child) or exits on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"batch_throughput: command failed ({proc.returncode}): {' '.join(cmd)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout, proc.stderr, wall, cpu


def longhaul_ids(binary, model, text):
    out = subprocess.run([binary, "tokenize", "-m", model, text], stdout=subprocess.PIPE, check=True, text=True)
    return json.loads(out.stdout)


CLOSING = re.compile(r"batch: (\d+) requests, (\d+) tokens generated in ([\d.]+) s \(([\d.]+) tokens/s\), "
                     r"parallel (\d+), (\d+) threads \| peak RSS ([\d.]+) MiB")


def run_longhaul(args, model, jsonl, out_path, n, ctx_per_seq):
    cmd = [args.longhaul, "batch", "-m", model, "-f", jsonl, "-o", out_path, "--parallel", str(n),
           "-t", str(args.threads), "-n", str(args.n_gen), "--ignore-eos", "--temp", "0", "-c", str(ctx_per_seq)]
    _, err, wall, cpu = timed_child(cmd)
    m = None
    for line in err.splitlines():
        m = CLOSING.search(line) or m
    if not m:
        sys.stderr.write(err)
        raise SystemExit("batch_throughput: no closing line from longhaul batch")
    requests, generated, seconds, rate, parallel, threads, rss = m.groups()
    if int(generated) != n * args.n_gen or int(requests) != n or int(threads) != args.threads:
        raise SystemExit(f"batch_throughput: longhaul ran {requests} requests, {generated} tokens, {threads} threads")
    lines = [json.loads(l) for l in open(out_path) if l.strip()]
    tokens = [l["tokens"] for l in lines]
    # The last request's first token comes after every prompt was fed: the prefill part of the run.
    prefill = max(l["time_to_first_token_s"] for l in lines)
    return {"tokens_per_s": float(rate), "seconds": float(seconds), "generated": int(generated),
            "prefill_seconds": prefill,
            "peak_rss_mib": float(rss), "process_wall": wall, "process_cpu": cpu, "tokens": tokens,
            "cmd": " ".join(cmd)}


def run_llama(args, model, ids_file, n, ctx_per_seq):
    cmd = [sys.executable, os.path.abspath(__file__), "--llama-worker", "--model", model, "--ids-file", ids_file,
           "--threads", str(args.threads), "-n", str(args.n_gen), "--ctx-per-seq", str(ctx_per_seq),
           "--flash-attn", args.flash_attn] + (["--kv-unified"] if args.kv_unified else [])
    out, _, wall, cpu = timed_child(cmd)
    r = json.loads(out)
    r["process_wall"], r["process_cpu"] = wall, cpu
    r["peak_rss_mib"] = r["peak_rss_bytes"] / 2**20
    return r


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description="longhaul batch vs llama.cpp batched decoding, total generated tokens/s")
    ap.add_argument("--models", default="smollm2-135m", help="comma list of short names or GGUF paths")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", default="1,2,4,8,16", help="comma list of sequence counts N (N prompts each)")
    ap.add_argument("-n", "--n-gen", type=int, default=128, help="tokens generated per prompt")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds (llama.cpp, then longhaul, per N)")
    ap.add_argument("--flash-attn", choices=["off", "on", "auto"], default="off", help="llama.cpp flash attention")
    ap.add_argument("--kv-unified", action="store_true", help="llama.cpp: one K/V buffer for all sequences")
    ap.add_argument("--longhaul", default=os.path.join(ROOT, "build/release/cli/longhaul"))
    ap.add_argument("--json-out", default="", help="also write every raw result to this file")
    # Internal: the llama.cpp side, in its own process.
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ids-file", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ctx-per-seq", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.llama_worker:
        return llama_worker(args)

    parallel = int_list(args.parallel)
    if max(parallel) > len(PROMPTS):
        raise SystemExit(f"batch_throughput: at most {len(PROMPTS)} prompts")
    models = [resolve_model(m) for m in args.models.split(",") if m]
    for m in models:
        if not os.path.exists(m):
            raise SystemExit(f"batch_throughput: model {m} not found")
    if not os.path.exists(args.longhaul):
        raise SystemExit(f"batch_throughput: {args.longhaul} not found; build it or pass --longhaul")

    tmp = tempfile.mkdtemp(prefix="batch_throughput.")
    load_start = loadavg()
    started = time.time()
    raw = []
    # results[(model, n)][engine] = list of per-round dicts
    results = {}
    setup = {}
    for model in models:
        ids = [longhaul_ids(args.longhaul, model, p) for p in PROMPTS[:max(parallel)]]
        for n in parallel:
            name = os.path.basename(model)
            jsonl = os.path.join(tmp, f"{name}.{n}.jsonl")
            with open(jsonl, "w") as f:
                for p in PROMPTS[:n]:
                    f.write(json.dumps({"prompt": p}) + "\n")
            ids_file = os.path.join(tmp, f"{name}.{n}.ids.json")
            with open(ids_file, "w") as f:
                json.dump({"ids": ids[:n], "texts": PROMPTS[:n]}, f)
            lens = [len(x) for x in ids[:n]]
            ctx_per_seq = round_up(max(lens) + args.n_gen, 256)
            setup[(name, n)] = {"jsonl": jsonl, "ids_file": ids_file, "ctx": ctx_per_seq, "lens": lens}

    for rnd in range(args.rounds):
        for model in models:
            name = os.path.basename(model)
            for n in parallel:
                s = setup[(name, n)]
                a = run_llama(args, model, s["ids_file"], n, s["ctx"])
                b = run_longhaul(args, model, s["jsonl"], os.path.join(tmp, f"{name}.{n}.out.jsonl"), n, s["ctx"])
                load = loadavg()
                prefix = [common_prefix(x, y) for x, y in zip(a["tokens"], b["tokens"])]
                cell = results.setdefault((name, n), {"llama.cpp": [], "longhaul": [], "prefix": [], "same_ids": 0})
                cell["llama.cpp"].append(a)
                cell["longhaul"].append(b)
                cell["prefix"].append(statistics.fmean(prefix))
                cell["same_ids"] = a["same_prompt_ids"]
                raw.append({"round": rnd, "model": name, "parallel": n, "load": load, "ctx_per_seq": s["ctx"],
                            "prompt_lens": s["lens"], "common_prefix": prefix,
                            "llama.cpp": {k: v for k, v in a.items() if k != "tokens"},
                            "longhaul": {k: v for k, v in b.items() if k != "tokens"}})
                print(f"round {rnd + 1}/{args.rounds} {name} N={n}: llama.cpp {a['tokens_per_s']:.1f} t/s "
                      f"({a['seconds']:.2f} s, prefill {a['prefill_seconds']:.3f} s, RSS {a['peak_rss_mib']:.0f} MiB), "
                      f"longhaul {b['tokens_per_s']:.1f} t/s ({b['seconds']:.2f} s, prefill {b['prefill_seconds']:.3f} s, "
                      f"RSS {b['peak_rss_mib']:.0f} MiB), common prefix "
                      f"{statistics.fmean(prefix):.1f}/{args.n_gen} (load {' '.join(load)})", file=sys.stderr)
    load_end = loadavg()

    cmd = " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])
    print(f"python3 bench/{cmd}")
    print(f"{args.threads} threads, {args.n_gen} tokens per prompt (greedy, past end of generation), N prompts on N "
          f"sequences (one wave); llama.cpp flash-attn {args.flash_attn}, K/V f16, "
          f"kv_unified {'true' if args.kv_unified else 'false'}; load average at start {' '.join(load_start)}, "
          f"at end {' '.join(load_end)}; {args.rounds} rounds; {time.time() - started:.0f} s\n")
    print("| model | N | prompt tokens | llama.cpp t/s (min-max) | longhaul t/s (min-max) "
          "| longhaul / llama.cpp (min-max) | llama.cpp speed-up over N=1 | longhaul speed-up over N=1 "
          "| common greedy prefix | cores busy (llama.cpp / longhaul) |")
    print("| ----- | -: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | :---: |")
    for (name, n), cell in results.items():
        def rates(engine):
            return [r["tokens_per_s"] for r in cell[engine]]

        def span(xs, fmt="{:.1f}"):
            return f"{fmt.format(statistics.fmean(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"

        ra, rb = rates("llama.cpp"), rates("longhaul")
        ratios = [b / a for a, b in zip(ra, rb)]
        base = results.get((name, 1))
        up_a = up_b = "-"
        if base:
            up_a = f"{statistics.fmean(ra) / statistics.fmean([r['tokens_per_s'] for r in base['llama.cpp']]):.2f}x"
            up_b = f"{statistics.fmean(rb) / statistics.fmean([r['tokens_per_s'] for r in base['longhaul']]):.2f}x"
        busy = lambda e: statistics.fmean(r["process_cpu"] / r["process_wall"] for r in cell[e])
        lens = setup[(name, n)]["lens"]
        ids_note = "" if cell["same_ids"] == n else f" (llama.cpp tokenizer differs on {n - cell['same_ids']})"
        print(f"| {DISPLAY_NAMES.get(name, name)} | {n} | {sum(lens)}{ids_note} | {span(ra)} | {span(rb)} | **{span(ratios, '{:.2f}')}** "
              f"| {up_a} | {up_b} | {statistics.fmean(cell['prefix']):.1f}/{args.n_gen} "
              f"| {busy('llama.cpp'):.2f} / {busy('longhaul'):.2f} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "load_start": load_start, "load_end": load_end, "rounds": raw}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
