"""bench/llama_agreement.py's classes of a difference between llama.cpp's middle and codetune's
(the figures themselves go in bench/RESULTS.md). Texts are generated, not quoted."""

from __future__ import annotations

import random
import re
import string

from .conftest import bench_module


def _encode(width: int):
    """A toy BPE-like tokenizer: runs of one character in pieces of at most `width`, words
    whole; enough to make a text prefix that is not a token prefix."""
    def encode(text: str) -> list[str]:
        out = []
        for m in re.finditer(r"(.)\1*", text):
            run = m.group(0)
            out += [run[i:i + width] for i in range(0, len(run), width)]
        return out
    return encode


def test_every_difference_gets_the_first_class_that_explains_it():
    classify = bench_module("llama_agreement").classify
    rng = random.Random()
    for _ in range(50):
        name = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 12)))
        ref = f"{name} = build_{name}(value)"
        enc = _encode(rng.randint(3, 8))
        assert classify(ref, ref, True, None, enc) == "identical"
        ran_on = ref + "\n" + f"return {name}"
        assert classify(ref, ran_on, True, (ref, "suffix"), enc) == "suffix rule"
        assert classify(ref, ran_on, True, (ref, "stop"), enc) == "stop"
        # another prompt explains anything that codetune's ending does not
        assert classify(ref, f"{name}_other()", False, (f"{name}_other()", None),
                        enc) == "tokenization"
        # the same tokens ended elsewhere (a token budget, an end token one side ignores)
        assert classify(ref, ref + " + 1", True, None, enc) == "stop"
        assert classify(ref, "", True, None, enc) == "stop"
        # the greedy paths part at a token
        assert classify(ref, f"{name} = other_{name}(value)", True, None, enc) == "sampling"
        # a text prefix whose tokens part: "=" * k is not the start of "=" * n's tokens
        width = rng.randint(3, 8)
        n = rng.randint(2 * width + 1, 6 * width)
        k = rng.choice([j for j in range(width + 1, n) if j % width])
        assert classify("=" * n, "=" * k, True, None, _encode(width)) == "sampling"
        assert classify("=" * n, "=" * ((n - 1) // width * width), True, None,
                        _encode(width)) == "stop"
        # without a tokenizer, a text prefix counts as a stop
        assert classify("=" * n, "=" * k, True, None) == "stop"
