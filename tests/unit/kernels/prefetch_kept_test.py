#!/usr/bin/env python3
"""The attention kernels' software prefetches survive compilation.

GCC 12 counts a function whose only effect is __builtin_prefetch as pure and deletes an unused call to it, so a
reader's prefetch() could vanish from the built kernels with every result unchanged: the f16 decode kernels lost
theirs that way and SmolLM2 decoded 20-30% slower at depth 4096-16384 (kernels/attention_prefetch.h). No value
test can see a missing prefetch, so this one reads the machine code: in the AVX-512 and AVX2 attention objects of
longhaul_kernels, every kernel instantiation that streams KV rows from memory (listed below) must hold at least one
prefetch instruction, and each object must hold some of them.

Usage: prefetch_kept_test.py OBJDUMP OBJECT...  (the objects of longhaul_kernels; others are ignored)
"""
import re
import subprocess
import sys

# Per attention object: which demangled function names must prefetch. AVX-512: the row ("few") kernels of every
# reader and head size (for f16 rows, those that ask ahead: F16Rows<..., true>; the streamed ones, taken on AMD,
# leave it to the hardware). AVX2 (whose kernel is never inlined, so each reader's is a function of its own): the f16
# kernels of heads up to 64 dimensions (the reader of 16 * KV bytes asks only for KV <= 8, attention_avx2.cc) and
# the quantized ones of every head size.
MUST_PREFETCH = {
    "attention_avx512.cc.o": re.compile(r"attention_update_few<.*(F16Rows<\d+, \d+, true>|QuantizedReader<)"),
    "attention_avx2.cc.o": re.compile(r"attention_update_sized<.*(F16Rows<(4|8), |QuantizedReader<)"),
}
FUNCTION = re.compile(r"^[0-9a-f]+ <(.*)>:$")


def functions(objdump, path):
    """{demangled name: number of prefetch instructions} for every function of the object, a function's clones and
    split-off parts (" [clone .cold]", " [clone .isra.0]"...) counted with it."""
    text = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", path], check=True, capture_output=True,
                          text=True).stdout
    counts, name = {}, None
    for line in text.splitlines():
        m = FUNCTION.match(line)
        if m:
            name = re.sub(r" \[clone [^\]]*\]", "", m.group(1))
            counts.setdefault(name, 0)
        elif name is not None and re.search(r"\bprefetch(t0|t1|t2|nta|w)?\b", line):
            counts[name] += 1
    return counts


def main():
    objdump, objects = sys.argv[1], sys.argv[2:]
    failures, checked = [], 0
    for suffix, pattern in MUST_PREFETCH.items():
        paths = [p for p in objects if p.endswith(suffix)]
        if not paths:
            failures.append(f"no object named *{suffix} among the {len(objects)} given")
            continue
        for path in paths:
            matched = {n: c for n, c in functions(objdump, path).items() if pattern.search(n)}
            if not matched:
                failures.append(f"{path}: no function matches {pattern.pattern}")
            for name, count in sorted(matched.items()):
                checked += 1
                if count == 0:
                    failures.append(f"{path}: {name[:160]} has no prefetch instruction")
    for f in failures:
        print("FAIL:", f)
    print(f"{checked} kernel functions checked, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
