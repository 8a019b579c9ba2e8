#!/usr/bin/env python3
"""Greedy continuations of longhaul and llama.cpp side by side, on prompts of your choice.

For each prompt, `longhaul run --temp 0 --json` gives the prompt's token ids and its continuation; llama.cpp
(llama-cpp-python, settings of record_fixtures.py: f16 KV cache, flash attention off, no repacked weights) is
fed the same ids and continues greedily. The script prints, per prompt, how many tokens agree and, where they
part, llama.cpp's own top-2 logit gap at that step: a gap of a few tenths is a near-tie that a different
summation order flips (llama.cpp's AVX2 and AVX-512 builds part at such steps too, see tools/README.md).

  python3 tools/compare_greedy.py --model ~/.cache/longhaul/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      -n 48 "The capital of Japan is" "def quicksort(arr):"
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import record_fixtures as rf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="GGUF path")
    ap.add_argument("-n", type=int, default=48, help="tokens to generate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--longhaul", default=os.path.join(ROOT, "build/release/cli/longhaul"))
    ap.add_argument("prompts", nargs="+")
    args = ap.parse_args()
    llm = rf.load_context(args.model, args.threads, 2048, 512, False)
    identical = 0
    for prompt in args.prompts:
        run = subprocess.run([args.longhaul, "run", "-m", args.model, "-p", prompt, "-n", str(args.n), "--temp", "0",
                              "--json", "--ignore-eos", "-t", str(args.threads)], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"longhaul failed: {run.stderr.strip()}")
        out = json.loads(run.stdout)
        ours = out["tokens"]
        llm.reset()
        llm.eval(out["prompt_tokens"])
        ref, gaps = [], []
        for _ in ours:
            best, gap = rf.top2(rf.last_logits(llm))
            ref.append(best)
            gaps.append(gap)
            llm.eval([best])
        part = next((i for i in range(len(ours)) if ours[i] != ref[i]), None)
        identical += part is None
        where = "identical" if part is None else f"part at step {part} (llama.cpp top-2 gap {gaps[part]:.3f})"
        print(f"{prompt[:40]!r:44} {len(ours) if part is None else part:3d}/{len(ours)} tokens agree, {where}")
    print(f"{identical} of {len(args.prompts)} continuations identical")


if __name__ == "__main__":
    main()
