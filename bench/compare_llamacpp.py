#!/usr/bin/env python3
"""Side-by-side throughput of longhaul and llama.cpp on the same GGUF files.

For every model, the two engines run the same tests (ppP, tgN, tgN@dD), the same
thread counts and the same seeded random token ids, in separate processes, alternating
A (llama.cpp) and B (longhaul) test by test for --rounds rounds so that machine noise (other jobs,
frequency changes) hits both. llama.cpp runs through llama-cpp-python's low-level API
exactly as llama-bench does it: llama_decode on one batch of P tokens (n_batch =
n_ubatch = P up to 512) for pp, one token per llama_decode for tg, timing only the
decode calls; K/V cache f16; n_threads = n_threads_batch = the thread count.

The table gives, per test: llama.cpp t/s ± sd and longhaul t/s ± sd over all
repetitions of all rounds, the ratio longhaul / llama.cpp (mean of the per-round
ratios, with their min-max; at one thread also the ratio of median t/s by process CPU time,
which leaves out waits for a core on a shared machine), and for generation tests the bandwidth fraction
    (weight + KV bytes read per token) x t/s / probed read bandwidth
for both engines, with the bytes per token as longhaul counts them (same file, same test).
The last column, cores busy = CPU seconds / wall seconds, tells a clean multi-threaded cell
(close to the thread count) from one where another job held a core (close to 1).

Usage (from the repository root, after scripts/build.sh release):
  python3 bench/compare_llamacpp.py --models smollm2-135m,smollm2-135m-q8,gemma3-270m \\
      --threads 1,2 -p 512 -n 128 --reps 3 --rounds 2
  python3 bench/compare_llamacpp.py --models smollm2-135m --threads 2 -p 0 -n 32 --depths 4096

With --kv-policies full,quest,... longhaul runs each test once per KV policy (right after llama.cpp), and a
second table gives, per test, llama.cpp's t/s and each policy's, its ratio to `full` and to llama.cpp, and the share
of the cached keys a decode token read (bench's keys_read):
  python3 bench/compare_llamacpp.py --models smollm2-135m --threads 2 -p 0 -n 32 --depths 0,4096,16384,32768 \
      --kv-policies full,quest,lserve --reps 2 --rounds 1
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

# ggml_type values of llama.cpp's cache types (ggml.h: GGML_TYPE_F16 = 1, Q4_0 = 2, Q8_0 = 8).
GGML_CACHE_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}

SHORT_NAMES = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "smollm2-135m-q8": "SmolLM2-135M-Instruct.Q8_0.gguf",  # made by bench/make_q8_0.py
    "gemma3-270m": "gemma-3-270m-q4_k_m.gguf",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def models_dir():
    return os.environ.get("LONGHAUL_MODELS") or os.path.join(os.path.expanduser("~"), ".cache", "longhaul", "models")


def resolve_model(name):
    if name in SHORT_NAMES:
        return os.path.join(models_dir(), SHORT_NAMES[name])
    return name


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip() != ""]


def test_list(n_prompt, n_gen, depths):
    """Test names in longhaul bench's order: per depth, prompt tests then generation tests."""
    tests = []
    for d in depths or [0]:
        for p in n_prompt:
            if p > 0:
                tests.append(("pp", p, d))
        for n in n_gen:
            if n > 0:
                tests.append(("tg", n, d))
    return tests


def test_name(kind, size, depth):
    return f"{kind}{size}" + (f"@d{depth}" if depth > 0 else "")


# ---------------------------------------------------------------------------------------------
# llama.cpp worker: runs in its own process (python3 compare_llamacpp.py --llama-worker ...) and
# prints JSON shaped like `longhaul bench --json`.
# ---------------------------------------------------------------------------------------------
def llama_worker(args):
    import random
    import resource

    # llama_cpp imports numpy, whose OpenBLAS would start a pool of worker threads that compete for the cores.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import llama_cpp as lc

    # llama.cpp logs every load to stderr; keep the comparison's output readable.
    @lc.llama_log_callback
    def quiet(level, text, user_data):
        pass

    lc.llama_log_set(quiet, None)
    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = lc.llama_model_load_from_file(args.model.encode(), mparams)
    if not model:
        print(f"llama worker: cannot load {args.model}", file=sys.stderr)
        return 1
    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    # A sliding-window cache drops old cells while generating, so it cannot be rewound to the depth;
    # for such models each repetition clears the cache and prefills the depth again (untimed), as llama-bench does.
    has_swa = lc.llama_model_n_swa(model) > 0
    fa = {"off": lc.LLAMA_FLASH_ATTN_TYPE_DISABLED, "on": lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
          "auto": lc.LLAMA_FLASH_ATTN_TYPE_AUTO}[args.flash_attn]

    results = []
    for n_threads in int_list(args.threads):
        for kind, size, depth in test_list(int_list(args.n_prompt), int_list(args.n_gen), int_list(args.depths)):
            rng = random.Random(args.seed)
            n_batch = min(size, 512) if kind == "pp" else 512
            cparams = lc.llama_context_default_params()
            cparams.n_ctx = depth + size + 16
            cparams.n_batch = n_batch
            cparams.n_ubatch = n_batch
            cparams.n_seq_max = 1
            cparams.n_threads = n_threads
            cparams.n_threads_batch = n_threads
            cparams.flash_attn_type = fa
            cparams.type_k = GGML_CACHE_TYPES[args.llama_cache_type]
            cparams.type_v = GGML_CACHE_TYPES[args.llama_cache_type]
            cparams.no_perf = True
            ctx = lc.llama_init_from_model(model, cparams)
            if not ctx:
                print(f"llama worker: cannot create a context for {test_name(kind, size, depth)}", file=sys.stderr)
                return 1
            mem = lc.llama_get_memory(ctx)

            def feed(ids, chunk):
                for begin in range(0, len(ids), chunk):
                    part = ids[begin:begin + chunk]
                    arr = (lc.llama_token * len(part))(*part)
                    rc = lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(part)))
                    if rc != 0:
                        raise RuntimeError(f"llama_decode returned {rc}")
                lc.llama_synchronize(ctx)

            depth_ids = [rng.randrange(n_vocab) for _ in range(depth)]
            if depth > 0 and not has_swa:
                feed(depth_ids, n_batch)
            samples, cpu_samples = [], []
            for rep in range(-args.warmup, args.reps):
                if depth > 0 and not has_swa:
                    lc.llama_memory_seq_rm(mem, 0, depth, -1)
                else:
                    lc.llama_memory_clear(mem, True)
                    if depth > 0:
                        feed(depth_ids, n_batch)
                ids = [rng.randrange(n_vocab) for _ in range(size)]
                if kind == "pp":
                    # Batches of n_batch tokens, built before the clock starts.
                    arrs = [(lc.llama_token * len(ids[b:b + n_batch]))(*ids[b:b + n_batch])
                            for b in range(0, size, n_batch)]
                    batches = [lc.llama_batch_get_one(a, len(a)) for a in arrs]
                else:
                    arrs = [(lc.llama_token * 1)(i) for i in ids]
                    batches = [lc.llama_batch_get_one(a, 1) for a in arrs]
                t0 = time.perf_counter()
                c0 = time.process_time()
                for b in batches:
                    rc = lc.llama_decode(ctx, b)
                    if rc != 0:
                        raise RuntimeError(f"llama_decode returned {rc}")
                lc.llama_synchronize(ctx)
                seconds = time.perf_counter() - t0
                cpu_seconds = time.process_time() - c0
                if rep >= 0:
                    samples.append(size / seconds)
                    cpu_samples.append(size / max(cpu_seconds, 1e-9))
            lc.llama_free(ctx)
            results.append({
                "model": os.path.basename(args.model),
                "test": test_name(kind, size, depth),
                "threads": n_threads,
                "tokens_per_s": statistics.fmean(samples),
                "stddev": statistics.stdev(samples) if len(samples) > 1 else 0.0,
                "samples": samples,
                "cpu_samples": cpu_samples,
                "reps": args.reps,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            })
    lc.llama_model_free(model)
    print(json.dumps({"results": results, "llama_cpp_python": lc.__version__ if hasattr(lc, "__version__") else "?"}))
    return 0


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def run_json(cmd):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"compare: command failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads(proc.stdout)


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return ["?", "?", "?"]


def probe_bandwidth(probe, threads):
    if not os.path.exists(probe):
        print(f"compare: no bandwidth probe at {probe}; bandwidth fractions are left out", file=sys.stderr)
        return {}
    out = run_json([probe, "--sizes-mib", "1024", "--threads", ",".join(str(t) for t in threads), "--json"])
    return {r["threads"]: r["median_gb_per_s"] for r in out["results"]}


def cores_busy(by_engine, cpu_by_engine, engine):
    """Mean CPU seconds per wall second over the samples: close to the thread count when every
    thread had a core, close to 1 when another job held the others (the run then measures the
    scheduler, not the engine)."""
    return statistics.fmean(w / c for w, c in zip(by_engine[engine], cpu_by_engine[engine]))


def fmt_rate(samples):
    sd = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return f"{statistics.fmean(samples):.2f} ± {sd:.2f}"


def print_policy_table(samples, round_means, info, engines):
    """One row per test: llama.cpp, then each KV policy's t/s with its ratio to the first policy (`full` when
    listed first) and to llama.cpp, and the share of cached keys a decode token read."""
    base = engines[0]
    head = " | ".join(f"{e.removeprefix('longhaul ')} t/s (x {base.removeprefix('longhaul ')}, x llama.cpp; keys read)"
                      for e in engines)
    print(f"| model | test | threads | llama.cpp t/s | {head} |")
    print("| ----- | ---- | ------: | ------------: |" + " ---: |" * len(engines))
    for key, by_engine in samples.items():
        model, test, t = key
        if "llama.cpp" not in by_engine:
            continue
        cells = []
        for e in engines:
            if e not in by_engine:
                cells.append("-")
                continue
            rate = statistics.fmean(by_engine[e])
            vs_base = rate / statistics.fmean(by_engine[base]) if base in by_engine else float("nan")
            vs_llama = statistics.fmean(round_means[key][e]) / statistics.fmean(round_means[key]["llama.cpp"])
            kr = info.get((key, e), {}).get("keys_read")
            kr_text = f"; {kr:.3f}" if isinstance(kr, (int, float)) and kr >= 0 else ""
            cells.append(f"{fmt_rate(by_engine[e])} ({vs_base:.2f}, {vs_llama:.2f}{kr_text})")
        print(f"| {model} | {test} | {t} | {fmt_rate(by_engine['llama.cpp'])} | " + " | ".join(cells) + " |")


def write_depth_plot(samples, engines, png):
    """Decode tokens/s against cache depth, one panel per model and thread count, one line per engine (gnuplot)."""
    panels = {}
    for (model, test, t), by_engine in samples.items():
        m = re.fullmatch(r"tg\d+(?:@d(\d+))?", test)
        if not m:
            continue
        depth = int(m.group(1) or 0)
        title = f'{model}, {t} thread{"s" if t > 1 else ""}: decode tokens/s against cache depth'
        for e in engines:
            if e in by_engine:
                panels.setdefault(title, {}).setdefault(e.removeprefix("longhaul "), []).append(
                    (depth, statistics.fmean(by_engine[e])))
    if not panels:
        raise SystemExit("compare: --plot needs tg tests")
    write_line_panels(panels, "tokens in the cache before the test", "decode tokens/s", png)


def write_line_panels(panels, xlabel, ylabel, png):
    """One gnuplot panel per entry of panels {title: {line label: [(x, y)]}}, stacked, y on a log2 scale."""
    if shutil.which("gnuplot") is None:
        raise SystemExit(f"{os.path.basename(sys.argv[0])}: --plot needs gnuplot (scripts/setup.sh installs gnuplot-nox)")
    data_path, script_path = png + ".dat", png + ".gp"
    blocks, plots = [], []
    for title, lines in panels.items():
        cmds = []
        for label, points in lines.items():
            cmds.append(f'"{data_path}" index {len(blocks)} using 1:2 with linespoints linewidth 1.5 title "{label}"')
            blocks.append("\n".join(f"{x} {y:.3f}" for x, y in sorted(points)))
        plots.append(f'set title "{title}"\nplot ' + ", \\\n     ".join(cmds))
    with open(data_path, "w") as f:
        f.write("\n\n\n".join(blocks) + "\n")
    with open(script_path, "w") as f:
        f.write(f'set terminal pngcairo size 1200,{500 * len(plots)} noenhanced font "sans,10"\n'
                f'set output "{png}"\nset key outside right top\nset grid\nset logscale y 2\n'
                f'set xlabel "{xlabel}"\nset ylabel "{ylabel}"\n'
                f"set multiplot layout {len(plots)},1\n" + "\n".join(plots) + "\nunset multiplot\n")
    subprocess.run(["gnuplot", script_path], check=True)
    os.remove(data_path)
    os.remove(script_path)
    print(f"plot: {png}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description="longhaul vs llama.cpp, side by side")
    ap.add_argument("--models", default="smollm2-135m", help="comma list of short names or GGUF paths")
    ap.add_argument("--threads", default="1,2", help="comma list")
    ap.add_argument("-p", "--n-prompt", default="512", help="comma list (0: no pp tests)")
    ap.add_argument("-n", "--n-gen", default="128", help="comma list (0: no tg tests)")
    ap.add_argument("--depths", default="0", help="comma list of cache depths before each test")
    ap.add_argument("--reps", type=int, default=3, help="measured repetitions per test and round")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured runs before them")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds (llama.cpp, then longhaul)")
    ap.add_argument("--flash-attn", choices=["off", "on", "auto"], default="off", help="llama.cpp flash attention")
    ap.add_argument("--llama-cache-type", choices=sorted(GGML_CACHE_TYPES), default="f16",
                    help="llama.cpp's K and V cache type (-ctk / -ctv); q8_0 and q4_0 need --flash-attn on, as "
                         "llama.cpp's quantized V cache does: the anchor for longhaul's bits=8 / bits=4 cells")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--longhaul", default=os.path.join(ROOT, "build/release/cli/longhaul"))
    ap.add_argument("--probe", default=os.path.join(ROOT, "build/release/bench/longhaul_bandwidth_probe"))
    ap.add_argument("--json-out", default="", help="also write every raw result to this file (after every test)")
    ap.add_argument("--plot", default="", help="with tg tests: also draw decode t/s against depth to this PNG")
    ap.add_argument("--kv-policies", default="",
                    help="comma list of longhaul KV policies (--kv-policy specs) to run each test with; "
                         "adds the per-policy table")
    # Internal: the llama.cpp side, in its own process.
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.llama_cache_type != "f16" and args.flash_attn != "on":
        raise SystemExit(f"compare: --llama-cache-type {args.llama_cache_type} needs --flash-attn on "
                         "(llama.cpp quantizes the V cache only with flash attention)")
    if args.llama_worker:
        return llama_worker(args)

    threads = int_list(args.threads)
    models = [resolve_model(m) for m in args.models.split(",") if m]
    for m in models:
        if not os.path.exists(m):
            raise SystemExit(f"compare: model {m} not found (smollm2-135m-q8 is made by bench/make_q8_0.py)")
    if not os.path.exists(args.longhaul):
        raise SystemExit(f"compare: {args.longhaul} not found; build it (scripts/build.sh release) or pass --longhaul")

    load_start = loadavg()
    started = time.time()
    bandwidth = probe_bandwidth(args.probe, threads)

    # samples[(model, test, threads)][engine] = list of t/s; round_means[...][engine] = per-round means.
    samples, cpu, round_means, info = {}, {}, {}, {}
    raw = []
    # A and B alternate per test (not per model), so that both engines measure a cell within
    # seconds of each other and a burst of load from other jobs hits both.
    tests = test_list(int_list(args.n_prompt), int_list(args.n_gen), int_list(args.depths))
    # Engines of longhaul's side: one per KV policy ("longhaul" alone when none is asked for, the default policy).
    policies = [p for p in args.kv_policies.split(",") if p]
    longhaul_engines = [("longhaul", [])] if not policies else [
        (f"longhaul {p}", ["--kv-policy", p]) for p in policies]
    for rnd in range(args.rounds):
        for model in models:
            for t in threads:
                for kind, size, depth in tests:
                    sizes = ["-p", str(size), "-n", "0"] if kind == "pp" else ["-p", "0", "-n", str(size)]
                    a = run_json([sys.executable, os.path.abspath(__file__), "--llama-worker", "--model", model,
                                  *sizes, "--depths", str(depth), "--threads", str(t), "--reps", str(args.reps),
                                  "--warmup", str(args.warmup), "--flash-attn", args.flash_attn,
                                  "--llama-cache-type", args.llama_cache_type,
                                  "--seed", str(args.seed)])
                    outs = [("llama.cpp", a)]
                    for engine, policy_args in longhaul_engines:
                        outs.append((engine, run_json(
                            [args.longhaul, "bench", "-m", model, *sizes, "-d", str(depth), "-t", str(t),
                             "-r", str(args.reps), "--warmup", str(args.warmup), "-s", str(args.seed), *policy_args,
                             "--json"])))
                    load = loadavg()
                    raw.append({"round": rnd, "model": model, "threads": t, "test": test_name(kind, size, depth),
                                "load": load, **dict(outs)})
                    for engine, out in outs:
                        for r in out["results"]:
                            key = (os.path.basename(model), r["test"], r["threads"])
                            samples.setdefault(key, {}).setdefault(engine, []).extend(r["samples"])
                            cpu.setdefault(key, {}).setdefault(engine, []).extend(r["cpu_samples"])
                            round_means.setdefault(key, {}).setdefault(engine, []).append(r["tokens_per_s"])
                            if engine != "llama.cpp":
                                info.setdefault(key, r)
                                info[(key, engine)] = r
                                info["machine"] = out["machine"]
                    def rate_text(engine, out):
                        r = out["results"][0]
                        kr = r.get("keys_read")
                        kr_text = f" (keys read {kr:.3f})" if isinstance(kr, (int, float)) and kr >= 0 else ""
                        return f"{engine} {r['tokens_per_s']:.1f}{kr_text}"
                    rates = ", ".join(rate_text(engine, out) for engine, out in outs)
                    print(f"round {rnd + 1}/{args.rounds} {os.path.basename(model)} t={t} "
                          f"{test_name(kind, size, depth)}: {rates} t/s (load {' '.join(load)})", file=sys.stderr)
                    if args.json_out:  # so far: a long run stopped early keeps what it measured
                        with open(args.json_out, "w") as f:
                            json.dump({"args": vars(args), "rounds": raw}, f, indent=1)
    load_end = loadavg()

    machine = info.get("machine", {})
    print(f"machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, longhaul kernels "
          f"{machine.get('isa', '?')}; llama.cpp flash-attn {args.flash_attn}, KV {args.llama_cache_type}")
    if bandwidth:
        print("probed read bandwidth (1 GiB buffer, median): " +
              ", ".join(f"{t} thread{'s' if t > 1 else ''} {bw:.2f} GB/s" for t, bw in sorted(bandwidth.items())))
    print(f"load average at start {' '.join(load_start)}, at end {' '.join(load_end)}; "
          f"{args.rounds} rounds x {args.reps} reps; {time.time() - started:.0f} s\n")
    if args.plot:
        write_depth_plot(samples, ["llama.cpp"] + [e for e, _ in longhaul_engines], args.plot)
    if policies:
        print_policy_table(samples, round_means, info, [e for e, _ in longhaul_engines])
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump({"args": vars(args), "load_start": load_start, "load_end": load_end, "rounds": raw}, f,
                          indent=1)
        return 0
    print("| model | test | threads | llama.cpp t/s | longhaul t/s | longhaul / llama.cpp (min-max over rounds) "
          "| same, by CPU time | bytes/token | llama.cpp BW frac | longhaul BW frac | cores busy (llama.cpp / longhaul) |")
    print("| ----- | ---- | ------: | ------------: | -----------: | :---: | :---: | ---------: | ---: | ---: | :---: |")
    for key, by_engine in samples.items():
        model, test, t = key
        if "llama.cpp" not in by_engine or "longhaul" not in by_engine:
            continue
        ratios = [b / a for a, b in zip(round_means[key]["llama.cpp"], round_means[key]["longhaul"])]
        r = info[key]
        bytes_per_token = r["weight_bytes_per_token"] + r["kv_bytes_per_token"]
        fr_a = fr_b = bytes_col = cpu_ratio = "-"
        if t == 1:
            # One thread: CPU time leaves out waits for a core on a shared machine (see bench.h).
            cpu_ratio = f"{statistics.median(cpu[key]['longhaul']) / statistics.median(cpu[key]['llama.cpp']):.2f}"
        if test.startswith("tg"):
            bytes_col = f"{bytes_per_token / 2**20:.1f} MiB"
            if t in bandwidth:
                bw = bandwidth[t] * 1e9
                fr_a = f"{bytes_per_token * statistics.fmean(by_engine['llama.cpp']) / bw:.2f}"
                fr_b = f"{bytes_per_token * statistics.fmean(by_engine['longhaul']) / bw:.2f}"
        print(f"| {model} | {test} | {t} | {fmt_rate(by_engine['llama.cpp'])} | {fmt_rate(by_engine['longhaul'])} "
              f"| {statistics.fmean(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {cpu_ratio} | {bytes_col} "
              f"| {fr_a} | {fr_b} | {cores_busy(by_engine, cpu[key], 'llama.cpp'):.2f} / "
              f"{cores_busy(by_engine, cpu[key], 'longhaul'):.2f} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "bandwidth_gb_per_s": bandwidth, "load_start": load_start,
                       "load_end": load_end, "rounds": raw}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
