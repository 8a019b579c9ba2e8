#!/usr/bin/env python3
"""Writes SmolLM2-135M-Instruct.Q8_0.gguf next to the installed Q4_1 file.

The benchmark issue asks for SmolLM2-135M in Q8_0. The only SmolLM2 file we install is
Q4_1 (scripts/setup.sh), so this script *requantizes* it with llama.cpp's own quantizer
(llama_model_quantize through llama-cpp-python, allow_requantize=True, ftype MOSTLY_Q8_0).

Read the result as "a Q8_0 file with Q4_1's accuracy": every weight is a Q4_1 value
re-encoded in Q8_0 blocks, so the quality is no better than Q4_1's, but the layout,
size and memory traffic are those of a real Q8_0 model, which is what a throughput
benchmark measures. Both engines read the same file.

Usage: python3 bench/make_q8_0.py [--src PATH] [--dst PATH] [--force]
"""
import argparse
import ctypes
import os
import sys


def models_dir() -> str:
    return os.environ.get("LONGHAUL_MODELS") or os.path.join(os.path.expanduser("~"), ".cache", "longhaul", "models")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=os.path.join(models_dir(), "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--dst", default=os.path.join(models_dir(), "SmolLM2-135M-Instruct.Q8_0.gguf"))
    ap.add_argument("--threads", type=int, default=0, help="quantizer threads (0: all cores)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing output file")
    args = ap.parse_args()

    if not os.path.exists(args.src):
        print(f"make_q8_0: source model {args.src} not found; run scripts/setup.sh first", file=sys.stderr)
        return 1
    if os.path.exists(args.dst) and not args.force:
        print(f"make_q8_0: {args.dst} exists (use --force to rewrite it)")
        return 0

    import llama_cpp

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True  # the source is already quantized (Q4_1)
    params.nthread = args.threads
    tmp = args.dst + ".tmp"
    rc = llama_cpp.llama_model_quantize(args.src.encode(), tmp.encode(), ctypes.byref(params))
    if rc != 0:
        print(f"make_q8_0: llama_model_quantize failed with code {rc}", file=sys.stderr)
        if os.path.exists(tmp):
            os.remove(tmp)
        return 1
    os.replace(tmp, args.dst)

    # Report the tensor types that came out, so the log shows what was benchmarked.
    try:
        import gguf

        reader = gguf.GGUFReader(args.dst)
        counts = {}
        for t in reader.tensors:
            name = t.tensor_type.name
            counts[name] = counts.get(name, 0) + 1
        print(f"make_q8_0: wrote {args.dst} ({os.path.getsize(args.dst) / 2**20:.1f} MiB), tensor types: {counts}")
    except ImportError:
        print(f"make_q8_0: wrote {args.dst} ({os.path.getsize(args.dst) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
