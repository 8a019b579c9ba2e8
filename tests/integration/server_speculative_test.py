#!/usr/bin/env python3
"""`longhaul serve --spec-type ngram` and `--spec-type recycle`: speculative decoding keeps the server's output.

For each draft source, on a fresh server: greedy (temperature 0) completions and chats of several prompts, one at a
time and eight at once (streaming and not), and n = 2, equal `longhaul run --temp 0` on the same prompts; a request
with logprobs runs without the draft source (a draft step records no log-probabilities) and gets one for every
token of its reply; /metrics counts drafted > 0 and accepted <= drafted, and the per-request log lines'
draft_n / draft_n_accepted add up to those counters.

Both the server and `run` use the AVX2 kernels (LONGHAUL_ISA=avx2), under which SmolLM2's logits have the same bits
in a step of one token and in a verification step of several (tests/unit/generate/speculative/greedy_test.cc): the
comparison is exact, with no near tie to excuse.

Usage: server_speculative_test.py LONGHAUL_BINARY. Exits 77 (skipped) when SmolLM2 is not installed or the CPU has
no AVX2.
"""
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

try:
    import openai
except ImportError:
    sys.exit("the openai package is missing: run scripts/setup.sh (it installs openai from PyPI)")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_testing import PROMPTS, SKIP, free_port, model_installed, start_server, stop_process, wait_http  # noqa: E402

N = 48  # max_tokens of every request
CTX = 512
MODEL = "smollm2-135m"
# A prompt that repeats itself, so that prompt lookup finds what follows and Token Recycling's table sees its tokens
# again; then plain prompts whose replies quote little.
QUOTE = "one two three four, one two three four, one two three four, one two"
COMPLETION_PROMPTS = [QUOTE, *PROMPTS[:5]]
QUESTION = "What is the capital of France?"


def has_avx2():
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


def greedy_run(binary, prompt, chat=False):
    """`longhaul run --temp 0 --json` of `prompt`: {"text", "tokens", "prompt_tokens", ...}."""
    args = [binary, "run", "-m", MODEL, "-t", "2", "--temp", "0", "--json", "-n", str(N), "-c", str(CTX), "-p", prompt]
    if chat:
        args.append("--chat")
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        lines = [l for l in r.read().decode().splitlines() if l and not l.startswith("#")]
    return dict((name, float(value)) for name, value in (l.rsplit(" ", 1) for l in lines))


def draft_counters(port):
    m = metrics(port)
    return int(m["longhaul_draft_tokens_total"]), int(m["longhaul_draft_accepted_tokens_total"])


class Client:
    """The four kinds of greedy request the test compares: completion or chat, streaming or not."""

    def __init__(self, port):
        self.api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)

    def complete(self, prompt, stream=False, **kw):
        """(text, completion tokens) of a greedy completion."""
        if not stream:
            r = self.api.completions.create(model=MODEL, prompt=prompt, max_tokens=N, temperature=0, **kw)
            return r.choices[0].text, r.usage.completion_tokens
        chunks = list(self.api.completions.create(model=MODEL, prompt=prompt, max_tokens=N, temperature=0, stream=True,
                                                  stream_options={"include_usage": True}, **kw))
        return "".join(c.choices[0].text for c in chunks if c.choices), chunks[-1].usage.completion_tokens

    def chat(self, question, stream=False):
        messages = [{"role": "user", "content": question}]
        if not stream:
            r = self.api.chat.completions.create(model=MODEL, messages=messages, max_tokens=N, temperature=0)
            return r.choices[0].message.content, r.usage.completion_tokens
        chunks = list(self.api.chat.completions.create(model=MODEL, messages=messages, max_tokens=N, temperature=0,
                                                       stream=True, stream_options={"include_usage": True}))
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage.completion_tokens


def expect_equal(got, want, what):
    text, n_tokens = got
    assert text == want["text"], f"{what}: {text!r} != run's {want['text']!r}"
    assert n_tokens == len(want["tokens"]), f"{what}: {n_tokens} tokens, run gave {len(want['tokens'])}"


def check_server(binary, spec_type, expected, expected_chat, tmp):
    port = free_port()
    log_path = os.path.join(tmp, spec_type + ".log")
    # The server inherits LONGHAUL_ISA=avx2 from this process (main).
    server = start_server(binary, port, ["-t", "2", "--parallel", "8", "-c", str(CTX), "--spec-type", spec_type,
                                         "--draft-max", "8"], log_path=log_path)
    try:
        wait_http(port, "/health", timeout=300)
        client = Client(port)
        # One at a time, then eight at once (the six completions and two chats, every other one streaming).
        for i, (prompt, want) in enumerate(zip(COMPLETION_PROMPTS, expected)):
            expect_equal(client.complete(prompt, stream=i % 2 == 1), want, f"{spec_type}, alone: {prompt!r}")
        expect_equal(client.chat(QUESTION, stream=True), expected_chat, f"{spec_type}, alone: chat")
        jobs = [(client.complete, p, i % 2 == 1, want) for i, (p, want) in enumerate(zip(COMPLETION_PROMPTS, expected))]
        jobs += [(client.chat, QUESTION, False, expected_chat), (client.chat, QUESTION, True, expected_chat)]
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(fn, arg, stream) for fn, arg, stream, _ in jobs]
            for (fn, arg, stream, want), f in zip(jobs, futures):
                expect_equal(f.result(), want, f"{spec_type}, eight at once: {arg!r} (stream={stream})")
        # n = 2: each choice speculates on its own sequence; both are the greedy reply.
        r = client.api.completions.create(model=MODEL, prompt=QUOTE, max_tokens=N, temperature=0, n=2)
        assert [c.text for c in r.choices] == [expected[0]["text"]] * 2, [c.text for c in r.choices]

        drafted, accepted = draft_counters(port)
        assert drafted > 0, f"{spec_type}: no draft token was verified"
        assert 0 <= accepted <= drafted, (drafted, accepted)
        # The repeating prompt's reply continues the pattern, which prompt lookup and the recycled candidates guess.
        assert accepted > 0, f"{spec_type}: {drafted} draft tokens, none accepted"

        # logprobs: decoded without the draft source (the counters do not move), one log-probability per token.
        r = client.api.completions.create(model=MODEL, prompt=QUOTE, max_tokens=N, temperature=0, logprobs=1)
        assert draft_counters(port) == (drafted, accepted), (draft_counters(port), drafted, accepted)
        choice = r.choices[0]
        assert choice.text == expected[0]["text"], choice.text
        n_text_tokens = r.usage.completion_tokens - (1 if choice.finish_reason == "stop" else 0)  # minus an end token
        assert len(choice.logprobs.tokens) == n_text_tokens, (len(choice.logprobs.tokens), r.usage.completion_tokens)
        assert "".join(choice.logprobs.tokens) == choice.text
        assert all(lp <= 0.0 for lp in choice.logprobs.token_logprobs), choice.logprobs.token_logprobs
        chat = client.api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                                  max_tokens=N, temperature=0, logprobs=True, top_logprobs=2)
        content = chat.choices[0].logprobs.content
        assert chat.choices[0].message.content == expected_chat["text"]
        assert "".join(t.token for t in content) == expected_chat["text"]
        assert all(t.top_logprobs[0].token == t.token for t in content)  # greedy: the most likely token
        assert draft_counters(port) == (drafted, accepted)
    finally:
        stop_process(server)
    with open(log_path) as f:
        log = f.read()
    assert server.returncode == 0, f"the server exited with {server.returncode}:\n{log[-4000:]}"
    assert f"speculative decoding: {spec_type}" in log, log[-4000:]
    # The log lines of the requests that speculated add up to the counters; the logprobs requests have none.
    per_request = [tuple(map(int, m)) for m in re.findall(r" draft_n=(\d+) draft_n_accepted=(\d+)", log)]
    n_requests = sum(1 for line in log.splitlines() if " prompt_tokens=" in line)
    assert len(per_request) == n_requests - 2, (len(per_request), n_requests)
    assert (sum(d for d, _ in per_request), sum(a for _, a in per_request)) == (drafted, accepted), per_request
    print(f"ok: --spec-type {spec_type}: {n_requests} requests equal run --temp 0; "
          f"{accepted} of {drafted} draft tokens accepted")


def main():
    binary = sys.argv[1]
    if not model_installed():
        print("SKIP: SmolLM2 is not installed (scripts/setup.sh)")
        return SKIP
    if not has_avx2():
        print("SKIP: the exact comparison needs the AVX2 kernels and this CPU has no AVX2")
        return SKIP
    os.environ["LONGHAUL_ISA"] = "avx2"  # for `run` and the servers alike
    expected = [greedy_run(binary, p) for p in COMPLETION_PROMPTS]
    expected_chat = greedy_run(binary, QUESTION, chat=True)
    with tempfile.TemporaryDirectory(prefix="longhaul_spec_") as tmp:
        for spec_type in ("ngram", "recycle"):
            check_server(binary, spec_type, expected, expected_chat, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
