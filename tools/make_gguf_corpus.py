#!/usr/bin/env python3
"""Writes tests/testdata/gguf_corpus/valid_gguf_py_all_types.gguf with gguf-py's GGUFWriter.

The file is an independent reference for longhaul's GGUF reader: gguf-py (not our
writer) encodes every metadata value type, nested arrays, a custom alignment and a
tensor of every type longhaul supports. tests/unit/gguf/gguf_reference_test.cc
asserts exactly the values written here; change both together.
Corrupted variants are generated at test time by the C++ writer (gguf_corpus.cc).

Usage: python3 tools/make_gguf_corpus.py [out_dir]
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

# (name, type): every tensor type longhaul runs. ne0 = 2 blocks, 3 rows.
TENSOR_TYPES = [
    ("t.f32", Q.F32), ("t.f16", Q.F16), ("t.bf16", Q.BF16), ("t.q8_0", Q.Q8_0),
    ("t.q4_0", Q.Q4_0), ("t.q4_1", Q.Q4_1), ("t.q5_0", Q.Q5_0), ("t.q5_1", Q.Q5_1),
    ("t.q2_k", Q.Q2_K), ("t.q3_k", Q.Q3_K), ("t.q4_k", Q.Q4_K), ("t.q5_k", Q.Q5_K),
    ("t.q6_k", Q.Q6_K),
]
N_ROWS = 3


def pattern(i_tensor: int, n_bytes: int) -> np.ndarray:
    # Byte j of tensor i is (7 * j + 13 * i + 1) mod 251: distinct per tensor, so a wrong offset shows.
    j = np.arange(n_bytes, dtype=np.int64)
    return ((7 * j + 13 * i_tensor + 1) % 251).astype(np.uint8)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "testdata", "gguf_corpus")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "valid_gguf_py_all_types.gguf")

    w = gguf.GGUFWriter(path, arch="test")  # adds general.architecture = "test"
    w.add_custom_alignment(64)  # adds general.alignment (uint32) and pads the data to 64
    w.add_uint8("v.u8", 200)
    w.add_int8("v.i8", -100)
    w.add_uint16("v.u16", 60000)
    w.add_int16("v.i16", -30000)
    w.add_uint32("v.u32", 4000000000)
    w.add_int32("v.i32", -2000000000)
    w.add_float32("v.f32", 0.15625)
    w.add_uint64("v.u64", 18000000000000000000)
    w.add_int64("v.i64", -9000000000000000000)
    w.add_float64("v.f64", -2.5e-300)
    w.add_bool("v.bool_true", True)
    w.add_bool("v.bool_false", False)
    w.add_string("v.str", "h\u00e9llo \u4e16\u754c\n")
    w.add_array("v.arr_i32", [1, -2, 3])
    w.add_array("v.arr_f32", [0.5, -1.25])
    w.add_array("v.arr_str", ["a", "", "ccc"])
    w.add_array("v.arr_bool", [True, False, True])
    w.add_array("v.arr_nested", [[1, 2], [3]])
    w.add_array("v.arr_nested3", [[[1, 2], [3]], [[4]]])
    w.add_array("v.arr_nested_str", [["x", "y"], ["z"]])
    w.add_key_value("v.arr_u8", [1, 2, 255], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT8)

    for i, (name, qtype) in enumerate(TENSOR_TYPES):
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        row_bytes = 2 * type_size  # two blocks per row
        data = pattern(i, N_ROWS * row_bytes).reshape(N_ROWS, row_bytes)
        w.add_tensor(name, data, raw_dtype=qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Print what an independent reader sees, for the test's expectations.
    r = gguf.GGUFReader(path)
    for t in r.tensors:
        print(t.name, t.tensor_type.name, list(t.shape), t.data_offset, t.n_bytes)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
