#!/usr/bin/env python3
"""Generate the quantization fixtures under tests/testdata/quant/ from gguf-py, an implementation independent of ours.

For every storage type: random blocks (<type>.blocks) and gguf.quants.dequantize of them (<type>.f32, little-endian
float32). For the types gguf-py can quantize: random inputs (quantize_<type>.in.f32) and gguf.quants.quantize of them
(quantize_<type>.bytes). Scale fields are set to finite f16 values (random raw bits could be NaN, which has no
meaningful equality), including one subnormal scale per type.

Usage: python3 tools/gen_quant_fixtures.py [out_dir]   (default: tests/testdata/quant next to this script)
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# type -> (elements per block, bytes per block, byte offsets of f16 scale fields, blocks to generate)
LAYOUTS = {
    T.Q4_0: (32, 18, [0], 32),
    T.Q4_1: (32, 20, [0, 2], 32),
    T.Q5_0: (32, 22, [0], 32),
    T.Q5_1: (32, 24, [0, 2], 32),
    T.Q8_0: (32, 34, [0], 32),
    T.Q2_K: (256, 84, [80, 82], 4),
    T.Q3_K: (256, 110, [108], 4),
    T.Q4_K: (256, 144, [0, 2], 4),
    T.Q5_K: (256, 176, [0, 2], 4),
    T.Q6_K: (256, 210, [208], 4),
}


def random_f16_scales(rng, n):
    """Finite f16 scales spanning several decades and both signs; the first one is subnormal."""
    mags = np.exp(rng.uniform(np.log(1e-4), np.log(2.0), size=n))
    signs = rng.choice([-1.0, 1.0], size=n)
    vals = (mags * signs).astype(np.float16)
    vals[0] = np.float16(3.0e-6)  # subnormal in f16 (below 2^-14)
    return vals.view(np.uint16)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data.tobytes())


def gen_dequant(rng, out):
    for qtype, (block, size, scale_offsets, n_blocks) in LAYOUTS.items():
        raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
        for off in scale_offsets:
            raw[:, off:off + 2] = random_f16_scales(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
        ref = quants.dequantize(raw.reshape(-1), qtype).astype(np.float32).reshape(-1)
        assert ref.size == n_blocks * block, (qtype, ref.size)
        assert np.all(np.isfinite(ref)), qtype
        name = qtype.name.lower().replace("_k", "_K")
        write(os.path.join(out, f"{name}.blocks"), raw)
        write(os.path.join(out, f"{name}.f32"), ref)

    # F16 / BF16: random raw bits, NaNs excluded (infinities and subnormals kept); F32: random finite floats.
    n = 1024
    h = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    h = h[((h & 0x7C00) != 0x7C00) | ((h & 0x03FF) == 0)][:512]
    h[:6] = [0x0000, 0x8000, 0x0001, 0x03FF, 0x7C00, 0xFC00]  # zeros, smallest/largest subnormal, infinities
    write(os.path.join(out, "f16.blocks"), h)
    write(os.path.join(out, "f16.f32"), quants.dequantize(h.view(np.uint8), T.F16).astype(np.float32))
    b = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    b = b[(b & 0x7F80) != 0x7F80][:512]
    write(os.path.join(out, "bf16.blocks"), b)
    write(os.path.join(out, "bf16.f32"), quants.dequantize(b.view(np.uint8), T.BF16).astype(np.float32))
    f = (rng.standard_normal(256) * 10).astype(np.float32)
    write(os.path.join(out, "f32.blocks"), f)
    write(os.path.join(out, "f32.f32"), quants.dequantize(f.view(np.uint8), T.F32).astype(np.float32))


def quantize_inputs(rng, n_blocks, block):
    """Rows of typical activations at several magnitudes, plus an all-zero block and exact-tie values."""
    x = rng.standard_normal((n_blocks, block)).astype(np.float32)
    x *= np.exp(rng.uniform(np.log(1e-3), np.log(100.0), size=(n_blocks, 1))).astype(np.float32)
    x[1, :] = 0.0
    # Block 2: integers with the extreme at 127 (Q8 scale d = 1), so x * id lands on halves exactly.
    x[2, :] = np.arange(block, dtype=np.float32) * 0.5 - 7.5
    x[2, 0] = 127.0
    return x.reshape(-1)


def gen_quantize(rng, out):
    for qtype in (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        x = quantize_inputs(rng, 16, 32)
        q = quants.quantize(x, qtype)
        name = qtype.name.lower()
        write(os.path.join(out, f"quantize_{name}.in.f32"), x)
        write(os.path.join(out, f"quantize_{name}.bytes"), q.astype(np.uint8))
    # F16 / BF16 conversions, with values at the rounding boundaries.
    x = (rng.standard_normal(256) * 100).astype(np.float32)
    x[:10] = [65504.0, 65519.0, 65520.0, 1e-8, 2.0 ** -25, 1.5 * 2.0 ** -25, -0.0, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11,
              1e30]
    x[10:12] = [5e-5, -6.1e-5]
    write(os.path.join(out, "quantize_f16.in.f32"), x)
    write(os.path.join(out, "quantize_f16.bytes"), x.astype(np.float16).view(np.uint8))
    x[:4] = [1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 3.4e38, 1e-40]
    write(os.path.join(out, "quantize_bf16.in.f32"), x)
    write(os.path.join(out, "quantize_bf16.bytes"), quants.quantize(x, T.BF16).astype(np.uint8))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "testdata",
                                                             "quant")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20240611)
    with np.errstate(over="ignore"):
        gen_dequant(rng, out)
        gen_quantize(rng, out)
    print("wrote fixtures to", os.path.normpath(out))


if __name__ == "__main__":
    main()
