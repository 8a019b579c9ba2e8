#!/usr/bin/env python3
"""Independent reference for DistStage: MT19937-64 written from the Matsumoto-Nishimura
specification (not the C++ standard library) plus the documented draw
(u = (x >> 11) * 2**-53; first candidate, in order, whose running softmax sum exceeds u * total).
Prints the tokens pick_stages_test.cc expects and the smallest distance from a target to a
cumulative boundary, which must be far above float rounding for the pinned values to be robust."""
import math

MASK = (1 << 64) - 1


class MT19937_64:
    def __init__(self, seed):
        self.mt = [0] * 312
        self.mt[0] = seed & MASK
        for i in range(1, 312):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & MASK
        self.index = 312

    def next(self):
        if self.index >= 312:
            for i in range(312):
                x = (self.mt[i] & 0xFFFFFFFF80000000) | (self.mt[(i + 1) % 312] & 0x7FFFFFFF)
                xa = x >> 1
                if x & 1:
                    xa ^= 0xB5026F5AA96619E9
                self.mt[i] = self.mt[(i + 156) % 312] ^ xa
            self.index = 0
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & MASK


# The C++ standard ([rand.predef]) fixes the 10000th output of a default-seeded mt19937_64.
g = MT19937_64(5489)
for _ in range(9999):
    g.next()
assert g.next() == 9981545732273789042

logits = [0.0, 1.0, 2.0, 0.5, -1.0]
m = max(logits)
w = [math.exp(l - m) for l in logits]
probs = [x / sum(w) for x in w]
cum = [sum(probs[: i + 1]) for i in range(len(probs))]
rng = MT19937_64(1234)
tokens, margin = [], 1.0
for _ in range(16):
    u = (rng.next() >> 11) * 2.0**-53
    target = u * cum[-1]
    tokens.append(next(i for i, c in enumerate(cum) if c > target))
    margin = min(margin, min(abs(c - target) for c in cum))
print("probs", [round(p, 6) for p in probs])
print("tokens", tokens)
print("min margin", margin)
