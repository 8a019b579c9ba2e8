#!/usr/bin/env python3
"""Time to first token on a real long document, dense prefill against sparse prefill patterns.

The document is text a Debian system ships (every file of /usr/share/common-licenses, in name order, about 60K
tokens), or --text FILE, cut to the requested number of prompt tokens and followed by a question. For every length and
--prefill-attn pattern, `longhaul run --temp 0 -n 64 --json` reads it once; the table gives the prompt time (the
time to the first token but for one decode step), prompt tokens/s, the speed-up over dense, and whether the first 64
greedy tokens equal dense's, or the index of the first one that differs and both texts from there.

Usage (from the repository root, after scripts/build.sh release), on an otherwise idle machine:
  python3 bench/long_document.py --model gemma3-270m --lengths 16384,32768 --patterns dense,minference
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTION = "\n\nIn one paragraph, what do the licences above allow and forbid?\n"


def longhaul(binary, args, stdin_text=None):
    proc = subprocess.run([binary] + args, input=stdin_text, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"long_document: {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def document_text(path):
    if path:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    parts = []
    for name in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(name):
            with open(name, encoding="utf-8", errors="replace") as f:
                parts.append(f.read())
    if not parts:
        raise SystemExit("long_document: no text in /usr/share/common-licenses; give --text FILE")
    return "\n\n".join(parts)


def prompt_of_length(binary, model, text, n_tokens):
    """The longest prefix of `text` (cut at a line end) plus QUESTION that tokenizes to at most n_tokens."""
    count = lambda s: len(longhaul(binary, ["tokenize", "-m", model, "-f", "-"], s))  # noqa: E731
    total = count(text + QUESTION)
    if total < n_tokens:
        raise SystemExit(f"long_document: the text has {total} tokens, fewer than {n_tokens}; give a longer --text")
    lo, hi = 0, len(text)  # characters: lo fits, hi may not
    while hi - lo > 200:
        mid = (lo + hi) // 2
        if count(text[:mid] + QUESTION) <= n_tokens:
            lo = mid
        else:
            hi = mid
    cut = text.rfind("\n", 0, lo)
    return text[:cut if cut > 0 else lo] + QUESTION


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--lengths", default="16384,32768", help="comma list of prompt lengths in tokens")
    ap.add_argument("--patterns", default="dense,minference", help="comma list of --prefill-attn values; dense first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--text", help="document to read (default: /usr/share/common-licenses/*)")
    ap.add_argument("--longhaul", default=os.path.join(ROOT, "build/release/cli/longhaul"))
    args = ap.parse_args()

    text = document_text(args.text)
    patterns = [p for p in args.patterns.split(",") if p]
    started = time.time()
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        prompt = prompt_of_length(args.longhaul, args.model, text, length)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(prompt)
            prompt_path = f.name
        try:
            base = None
            for p in patterns:
                out = longhaul(args.longhaul, ["run", "-m", args.model, "-f", prompt_path, "-n", str(args.n_gen),
                                               "--temp", "0", "-t", str(args.threads), "-c",
                                               str(length + args.n_gen + 64), "--prefill-attn", p, "--json"])
                t = out["timings"]
                row = {"length": t["prompt_tokens"], "pattern": p, "prompt_s": t["prompt_seconds"],
                       "prompt_tps": t["prompt_tokens_per_s"], "tokens": out["tokens"], "text": out["text"]}
                base = base or row
                print(f"{args.model} {row['length']} tokens {p}: prompt {row['prompt_s']:.1f} s "
                      f"({row['prompt_tps']:.1f} t/s)", file=sys.stderr, flush=True)
                rows.append((row, base))
        finally:
            os.remove(prompt_path)

    print(f"python3 bench/long_document.py --model {args.model} --lengths {args.lengths} --patterns {args.patterns} "
          f"--threads {args.threads}")
    print(f"{args.threads} threads, {time.time() - started:.0f} s\n")
    print(f"| prompt tokens | prefill | prompt s | prompt t/s | speed-up | first {args.n_gen} greedy tokens vs "
          f"{patterns[0]} |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")
    for row, base in rows:
        diverge = next((i for i, (a, b) in enumerate(zip(row["tokens"], base["tokens"])) if a != b), None)
        if row is base:
            same = "(reference)"
        elif diverge is None and len(row["tokens"]) == len(base["tokens"]):
            same = "equal"
        else:
            i = diverge if diverge is not None else min(len(row["tokens"]), len(base["tokens"]))
            same = f"differ from token {i}"
        print(f"| {row['length']} | {row['pattern']} | {row['prompt_s']:.1f} | {row['prompt_tps']:.1f} | "
              f"{base['prompt_s'] / row['prompt_s']:.2f}x | {same} |")
    print()
    for row, base in rows:
        print(f"{row['length']} {row['pattern']}: {json.dumps(row['text'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
