#!/usr/bin/env python3
"""`longhaul serve`'s prefix cache: a second request sharing a 2K-token prefix with the first reports the cached
tokens in usage.prompt_tokens_details.cached_tokens and in /metrics, and answers what a server without the cache
(--no-prefix-cache) answers.

Both servers feed prompts in 256-token chunks (--prefill-chunk 256, the KV page size), so a prompt's chunks start at
the same positions whether or not its first pages come from the cache: the greedy tokens must be equal.

Usage: server_prefix_cache_test.py LONGHAUL_BINARY. Exits 77 (skipped) when SmolLM2 is not installed.
"""
import json
import os
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_testing import SKIP, free_port, model_installed, start_server, stop_process, wait_http  # noqa: E402


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"/metrics has no {name}")


def run(binary, extra, prompts, tmp, name):
    """The greedy completions of `prompts`, one after the other, on a fresh server; and its /metrics counters."""
    port = free_port()
    server = start_server(binary, port, ["--parallel", "2", "-c", "4096", "-t", "2", "--prefill-chunk", "256", *extra],
                          log_path=os.path.join(tmp, name + ".log"))
    try:
        wait_http(port, "/health", timeout=120)
        replies = [post(port, "/v1/completions",
                        {"model": "smollm2-135m", "prompt": p, "max_tokens": 12, "temperature": 0}) for p in prompts]
        counters = (metric(port, "longhaul_prefix_cache_hits_total"),
                    metric(port, "longhaul_prefix_cache_hit_tokens_total"))
        return replies, counters
    finally:
        stop_process(server)


def main():
    binary = sys.argv[1]
    if not model_installed():
        print("SKIP: SmolLM2 is not installed (scripts/setup.sh)")
        return SKIP
    # A few-shot preamble of a little over 2K tokens, then two different questions.
    preamble = "".join(f"Question: what is {i} times 3? Answer: {3 * i}.\n" for i in range(1, 160))
    prompts = [preamble + "Question: what is 200 times 3? Answer:", preamble + "Question: what is 300 times 3? Answer:"]
    with tempfile.TemporaryDirectory(prefix="longhaul_prefix_") as tmp:
        cached, (hits, hit_tokens) = run(binary, [], prompts, tmp, "cached")
        plain, (plain_hits, _) = run(binary, ["--no-prefix-cache"], prompts, tmp, "plain")
    n_prompt = cached[1]["usage"]["prompt_tokens"]
    assert n_prompt >= 2048, f"the prompt has {n_prompt} tokens: the test wants a prefix of 2K tokens at least"
    first = cached[0]["usage"]["prompt_tokens_details"]["cached_tokens"]
    second = cached[1]["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert first == 0, first
    # Whole 256-token pages of the shared preamble: at least the 2048 tokens of its first eight pages.
    assert second >= 2048 and second % 256 == 0 and second < n_prompt, (second, n_prompt)
    assert (hits, hit_tokens) == (1, second), (hits, hit_tokens, second)
    assert plain_hits == 0 and plain[1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    for c, p in zip(cached, plain):
        assert c["choices"][0]["text"] == p["choices"][0]["text"], (c["choices"][0]["text"], p["choices"][0]["text"])
        assert c["usage"]["completion_tokens"] == p["usage"]["completion_tokens"]
    print(f"ok: the second request took {second} of {n_prompt} prompt tokens from the cache; "
          f"replies equal without the cache: {cached[1]['choices'][0]['text']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
