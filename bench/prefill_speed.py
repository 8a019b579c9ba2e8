#!/usr/bin/env python3
"""Long-prompt prefill speed: longhaul's --prefill-attn patterns next to dense prefill and llama.cpp.

For every model and prompt length L, in this order (one process each, so a burst of load hits neighbours alike):
  llama.cpp, flash attention off, then on   compare_llamacpp.py --llama-worker (llama-bench's pp test: L seeded
                                            random ids in llama_decode batches of 512 tokens, K/V f16)
  longhaul, each --prefill-attn pattern     longhaul bench -p L -n 0 --prefill-attn PATTERN (the same ids,
                                            steps of 512 tokens)
The figure is prompt tokens / seconds of the timed decode calls, no warm-up (at 32K one run is minutes), one
repetition per round. The table gives the mean over rounds, each pattern's speed-up over longhaul dense, and the
ratio of the best longhaul pattern over llama.cpp's better setting; `cores busy` (CPU seconds / wall seconds) tells
a clean two-thread cell from one where another job held a core.

Usage (from the repository root, after scripts/build.sh release), on an otherwise idle machine:
  python3 bench/prefill_speed.py --models gemma3-270m --lengths 8192,16384,32768 --threads 2
  python3 bench/prefill_speed.py --models smollm2-135m --lengths 4096,8192 --patterns dense,minference
--json-out FILE keeps every figure as it comes (rewritten after each run: a stopped sweep keeps what it measured);
--plot PNG draws prompt tokens/s against length, one panel per model, one line per engine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARE = os.path.join(ROOT, "bench", "compare_llamacpp.py")
sys.path.insert(0, os.path.dirname(COMPARE))
from compare_llamacpp import write_line_panels  # noqa: E402
SHORT_NAMES = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3-270m": "gemma-3-270m-q4_k_m.gguf",
}


def resolve_model(name):
    models = os.environ.get("LONGHAUL_MODELS") or os.path.join(os.path.expanduser("~"), ".cache", "longhaul", "models")
    return os.path.join(models, SHORT_NAMES[name]) if name in SHORT_NAMES else name


def run_json(cmd):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"prefill_speed: command failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads(proc.stdout)["results"][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gemma3-270m", help="comma list of short names or GGUF paths")
    ap.add_argument("--lengths", default="8192,16384", help="comma list of prompt lengths")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patterns", default="dense,minference", help="comma list of --prefill-attn values")
    ap.add_argument("--flash-attn", default="off,on", help="llama.cpp settings to run (comma list; empty: none)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--longhaul", default=os.path.join(ROOT, "build/release/cli/longhaul"))
    ap.add_argument("--json-out", help="write every figure to this JSON file, after each run")
    ap.add_argument("--plot", help="draw prompt tokens/s against length to this PNG (gnuplot)")
    args = ap.parse_args()

    patterns = [p for p in args.patterns.split(",") if p]
    fa_modes = [f for f in args.flash_attn.split(",") if f]
    rows = {}  # (model, L) -> {engine label: [(t/s, cores busy)]}
    started = time.time()
    for rnd in range(args.rounds):
        for name in args.models.split(","):
            model = resolve_model(name)
            for length in [int(x) for x in args.lengths.split(",")]:
                cell = rows.setdefault((os.path.basename(model), length), {})
                runs = [(f"llama.cpp fa {fa}", [sys.executable, COMPARE, "--llama-worker", "--model", model, "-p",
                                                str(length), "-n", "0", "--depths", "0", "--threads",
                                                str(args.threads), "--reps", "1", "--warmup", "0", "--flash-attn", fa,
                                                "--seed", str(args.seed)]) for fa in fa_modes]
                runs += [(f"longhaul {p}", [args.longhaul, "bench", "-m", model, "-p", str(length), "-n", "0", "-t",
                                            str(args.threads), "-r", "1", "--warmup", "0", "-s", str(args.seed),
                                            "--prefill-attn", p, "--json"]) for p in patterns]
                for label, cmd in runs:
                    r = run_json(cmd)
                    tps = r["tokens_per_s"]
                    # cpu_samples are tokens per CPU second: wall t/s over CPU t/s = CPU seconds per wall second.
                    busy = tps / r["cpu_samples"][0] if r.get("cpu_samples") else float("nan")
                    cell.setdefault(label, []).append((tps, busy))
                    if args.json_out:
                        with open(args.json_out, "w") as f:
                            json.dump([{"model": m, "prompt": n, "engine": l, "tokens_per_s": t, "cores_busy": b}
                                       for (m, n), c in rows.items() for l, v in c.items() for t, b in v], f, indent=1)
                    print(f"round {rnd + 1}/{args.rounds} {os.path.basename(model)} pp{length} {label}: {tps:.1f} t/s "
                          f"(cores busy {busy:.2f}, load {' '.join(open('/proc/loadavg').read().split()[:3])})",
                          file=sys.stderr, flush=True)

    print(f"python3 bench/prefill_speed.py --models {args.models} --lengths {args.lengths} --threads {args.threads} "
          f"--patterns {args.patterns} --flash-attn {args.flash_attn} --rounds {args.rounds}")
    print(f"{args.threads} threads, {args.rounds} round(s), {time.time() - started:.0f} s\n")
    labels = [f"llama.cpp fa {fa}" for fa in fa_modes] + [f"longhaul {p}" for p in patterns]
    print("| model | prompt | " + " | ".join(f"{l} t/s" for l in labels) +
          " | speed-up over dense | best longhaul / best llama.cpp | cores busy |")
    print("| ----- | -----: | " + " | ".join("---:" for _ in labels) + " | :---: | :---: | :---: |")
    for (model, length), cell in rows.items():
        mean = {l: statistics.fmean(t for t, _ in cell[l]) for l in labels if l in cell}
        dense = mean.get("longhaul dense")
        ups = ", ".join(f"{p} {mean[f'longhaul {p}'] / dense:.2f}x" for p in patterns
                        if p != "dense" and dense and f"longhaul {p}" in mean)
        best_lh = max((mean[l] for l in mean if l.startswith("longhaul")), default=0.0)
        best_ll = max((mean[l] for l in mean if l.startswith("llama.cpp")), default=0.0)
        busy = " / ".join(f"{statistics.fmean(b for _, b in cell[l]):.2f}" for l in labels if l in cell)
        ratio = f"{best_lh / best_ll:.2f}" if best_ll else "-"
        print(f"| {model} | {length} | " + " | ".join(f"{mean[l]:.1f}" if l in mean else "-" for l in labels) +
              f" | {ups or '-'} | {ratio} | {busy} |")
    if args.plot:
        panels = {}
        for (model, length), cell in rows.items():
            lines = panels.setdefault(f"{model}, {args.threads} threads: prompt tokens/s against prompt length", {})
            for l in labels:
                if l in cell:
                    lines.setdefault(l.removeprefix("longhaul "), []).append(
                        (length, statistics.fmean(t for t, _ in cell[l])))
        write_line_panels(panels, "prompt tokens", "prompt tokens/s", args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
