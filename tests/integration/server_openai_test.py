#!/usr/bin/env python3
"""`longhaul serve` driven by the official `openai` Python client, on a live server on a free loopback port.

Chat and completions, streaming and not, n = 2, stop sequences, log-probabilities, embeddings, models, usage counts;
errors raise the client's matching exception types; greedy outputs equal `longhaul run --temp 0` on the same prompts,
one at a time and eight at once; SIGTERM stops the server with exit code 0.

Usage: server_openai_test.py LONGHAUL_BINARY. Exits 77 (skipped) when SmolLM2 is not installed.
"""
import base64
import concurrent.futures
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

try:
    import openai
except ImportError:
    sys.exit("the openai package is missing: run scripts/setup.sh (it installs openai from PyPI)")

BINARY = sys.argv[1] if len(sys.argv) > 1 else "build/release/cli/longhaul"
MODELS = os.environ.get("LONGHAUL_MODELS", os.path.expanduser("~/.cache/longhaul/models"))
SMOLLM2 = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
KEY = "test-key-123"
CTX = 512

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_testing import PROMPTS  # noqa: E402  (12 greedy tokens of each have no near-tie on SmolLM2)
N = 12


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args):
    out = subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def greedy_run(prompt, chat=False, ignore_eos=False):
    args = ["run", "-m", "smollm2-135m", "-t", "2", "--temp", "0", "--json", "-n", str(N), "-c", str(CTX), "-p", prompt]
    if chat:
        args.append("--chat")
    if ignore_eos:
        args.append("--ignore-eos")
    return json.loads(run_cli(*args))


class Server:
    def __init__(self):
        self.port = free_port()
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [BINARY, "serve", "-m", "smollm2-135m", "-t", "2", "--port", str(self.port), "--parallel", "8",
             "-c", str(CTX), "--api-key", KEY, "--allow-kv-policy", "full,streaming"],
            stderr=self.log, stdout=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, self.stderr()
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not become healthy: " + self.stderr())

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


SERVER = None


def raw(method, path, body=None, headers=None, key=KEY):
    """(status, parsed JSON or text) of a request sent without the client."""
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = "Bearer " + key
    h.update(headers or {})
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(SERVER.base + path, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class ServeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = openai.OpenAI(base_url=SERVER.base + "/v1", api_key=KEY, max_retries=0, timeout=300)
        cls.model = "smollm2-135m"
        cls.expected = [greedy_run(p) for p in PROMPTS]

    def complete(self, prompt, **kw):
        return self.client.completions.create(model=self.model, prompt=prompt, max_tokens=N, temperature=0, **kw)

    def test_health_and_models(self):
        self.assertEqual(raw("GET", "/health", key=None)[0], 200)  # no key needed
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], [self.model])
        self.assertEqual(self.client.models.retrieve(self.model).id, self.model)

    def test_greedy_completions_equal_run_one_at_a_time(self):
        for prompt, want in zip(PROMPTS, self.expected):
            r = self.complete(prompt)
            self.assertEqual(r.choices[0].text, want["text"], prompt)
            self.assertEqual(r.usage.prompt_tokens, len(want["prompt_tokens"]), prompt)
            self.assertEqual(r.usage.completion_tokens, len(want["tokens"]), prompt)
            self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)
            # run's own reason: a reply whose N-th token is the end of generation stopped, not ran out.
            self.assertEqual(r.choices[0].finish_reason, "length" if want["stop"] in ("length", "context") else "stop")

    def test_greedy_completions_equal_run_eight_at_once(self):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(self.complete, PROMPTS))
        for prompt, want, r in zip(PROMPTS, self.expected, results):
            self.assertEqual(r.choices[0].text, want["text"], prompt)

    def test_streaming_completion_equals_non_streaming(self):
        prompt, want = PROMPTS[2], self.expected[2]
        chunks = list(self.complete(prompt, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        self.assertEqual(text, want["text"])
        self.assertEqual([c.choices[0].finish_reason for c in chunks if c.choices][-1], "length")
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, len(want["tokens"]))
        self.assertEqual(chunks[-1].usage.prompt_tokens, len(want["prompt_tokens"]))

    def test_chat_equals_run_chat_streaming_and_not(self):
        question = "What is the capital of France?"
        want = greedy_run(question, chat=True)
        messages = [{"role": "user", "content": question}]
        r = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=N, temperature=0)
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.choices[0].message.content, want["text"])
        self.assertEqual(r.usage.prompt_tokens, len(want["prompt_tokens"]))
        self.assertEqual(r.usage.completion_tokens, len(want["tokens"]))
        stream = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=N, temperature=0,
                                                     stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in chunks if c.choices), want["text"])
        self.assertEqual(chunks[-1].usage.completion_tokens, len(want["tokens"]))

    def test_ignore_eos_extension(self):
        # llama-server's field: generation goes on past the end of the turn, to max_tokens, as `run --ignore-eos`.
        prompt, ends = PROMPTS[4], self.expected[4]  # "My favourite recipe for pancakes" ends after 2 tokens
        self.assertLess(len(ends["tokens"]), N, "the reply must end before N tokens for this test")
        self.assertEqual(self.complete(prompt).choices[0].finish_reason, "stop")
        want = greedy_run(prompt, ignore_eos=True)
        self.assertEqual(len(want["tokens"]), N)
        r = self.complete(prompt, extra_body={"ignore_eos": True})
        self.assertEqual(r.usage.completion_tokens, N)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.choices[0].text, want["text"])

    def test_stop_sequences_cut_the_text(self):
        prompt, want = PROMPTS[3], self.expected[3]  # "1, 2, 3, 4, 5," continues with " 6, 7, ..."
        stop = want["text"][4:7]
        self.assertTrue(stop.strip(), want["text"])
        cut = want["text"][: want["text"].index(stop)]
        r = self.complete(prompt, stop=[stop, "never appears"])
        self.assertEqual(r.choices[0].text, cut)
        self.assertEqual(r.choices[0].finish_reason, "stop")
        chunks = list(self.complete(prompt, stop=stop, stream=True))
        self.assertEqual("".join(c.choices[0].text for c in chunks), cut)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "stop")

    def test_n_choices(self):
        r = self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": "Tell me a story."}],
                                                max_tokens=8, temperature=1.0, seed=5, n=2)
        self.assertEqual([c.index for c in r.choices], [0, 1])
        self.assertTrue(all(c.message.content for c in r.choices))
        self.assertEqual(r.usage.completion_tokens, 16)
        again = self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": "Tell me a story."}],
                                                    max_tokens=8, temperature=1.0, seed=5, n=2)
        self.assertEqual([c.message.content for c in again.choices], [c.message.content for c in r.choices])
        greedy = self.complete(PROMPTS[0], n=2)
        self.assertEqual([c.text for c in greedy.choices], [self.expected[0]["text"]] * 2)

    def test_logprobs(self):
        r = self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": "Say hi."}],
                                                max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
        content = r.choices[0].logprobs.content
        self.assertGreater(len(content), 0)
        self.assertLessEqual(len(content), r.usage.completion_tokens)
        self.assertEqual("".join(t.token for t in content), r.choices[0].message.content)
        for t in content:
            self.assertLessEqual(t.logprob, 0.0)
            self.assertEqual(len(t.top_logprobs), 3)
            # Greedy: the sampled token is the most likely one.
            self.assertEqual(t.top_logprobs[0].token, t.token)
            self.assertAlmostEqual(t.top_logprobs[0].logprob, t.logprob, places=5)
            self.assertGreaterEqual(t.top_logprobs[0].logprob, t.top_logprobs[1].logprob)
            self.assertLessEqual(sum(math.exp(a.logprob) for a in t.top_logprobs), 1.0 + 1e-4)
        c = self.complete(PROMPTS[0], logprobs=2)
        self.assertEqual(len(c.choices[0].logprobs.tokens), len(self.expected[0]["tokens"]))
        self.assertEqual("".join(c.choices[0].logprobs.tokens), c.choices[0].text)

    def test_embeddings(self):
        texts = ["The cat sat on the mat.", "A kitten rested on the rug.", "Quarterly revenue rose by 4%."]
        r = self.client.embeddings.create(model=self.model, input=texts)
        self.assertEqual([d.index for d in r.data], [0, 1, 2])
        vecs = [d.embedding for d in r.data]
        self.assertEqual(len(vecs[0]), 576)  # SmolLM2-135M's width
        for v in vecs:
            self.assertAlmostEqual(math.sqrt(sum(x * x for x in v)), 1.0, places=4)
        self.assertGreater(r.usage.prompt_tokens, 0)
        same = self.client.embeddings.create(model=self.model, input=texts[0])
        self.assertEqual(len(same.data), 1)
        for a, b in zip(same.data[0].embedding, vecs[0]):
            self.assertAlmostEqual(a, b, places=5)
        # base64: the same little-endian float32 values.
        status, body = raw("POST", "/v1/embeddings", {"model": self.model, "input": texts[:1], "encoding_format": "base64"})
        self.assertEqual(status, 200)
        decoded = struct.unpack("<576f", base64.b64decode(body["data"][0]["embedding"]))
        for a, b in zip(decoded, vecs[0]):
            self.assertAlmostEqual(a, b, places=5)

    def test_tokenize_and_detokenize(self):
        status, body = raw("POST", "/tokenize", {"content": "Hello, world", "add_special": False})
        self.assertEqual(status, 200)
        ids = json.loads(run_cli("tokenize", "-m", "smollm2-135m", "--no-bos", "Hello, world"))
        self.assertEqual(body["tokens"], ids)
        status, body = raw("POST", "/detokenize", {"tokens": ids})
        self.assertEqual((status, body["content"]), (200, "Hello, world"))
        status, body = raw("POST", "/tokenize", {"content": "Hi", "with_pieces": True, "add_special": False})
        self.assertEqual("".join(t["piece"] for t in body["tokens"]), "Hi")

    def test_kv_policy_extension(self):
        r = self.complete(PROMPTS[0], extra_body={"kv_policy": "streaming:sink=4:window=252"})
        self.assertEqual(r.choices[0].text, self.expected[0]["text"])  # the prompt fits the window: same tokens
        with self.assertRaises(openai.BadRequestError) as e:
            self.complete(PROMPTS[0], extra_body={"kv_policy": "h2o:budget=64"})  # not allowed on this server
        self.assertIn("not allowed", str(e.exception))
        with self.assertRaises(openai.BadRequestError):
            self.complete(PROMPTS[0], extra_body={"kv_policy": "streaming:window=-5"})

    def test_errors_raise_the_clients_exception_types(self):
        bad_key = openai.OpenAI(base_url=SERVER.base + "/v1", api_key="wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad_key.models.list()
        self.assertEqual(raw("GET", "/v1/models", key=None)[0], 401)
        with self.assertRaises(openai.NotFoundError):
            self.client.completions.create(model="gpt-4", prompt="x", max_tokens=1)
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.completions.create(model=self.model, prompt="x", max_tokens=1, temperature=3)
        self.assertEqual(e.exception.body["param"], "temperature")
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.completions.create(model=self.model, prompt="word " * 600, max_tokens=1)
        self.assertEqual(e.exception.body["code"], "context_length_exceeded")
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.completions.create(model=self.model, prompt="x", max_tokens=CTX)
        self.assertEqual(e.exception.body["param"], "max_tokens")
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(model=self.model, messages=[], max_tokens=1)
        with self.assertRaises(openai.BadRequestError):
            self.client.completions.create(model=self.model, prompt=[10**9], max_tokens=1)
        status, body = raw("POST", "/v1/chat/completions", b"{not json")
        self.assertEqual((status, body["error"]["code"]), (400, "invalid_json"))
        status, body = raw("POST", "/v1/completions", {"model": self.model, "prompt": "x", "bogus": 1})
        self.assertEqual((status, body["error"]["param"]), (400, "bogus"))
        status, body = raw("POST", "/v1/completions", b"{\"prompt\": \"" + b"a" * (9 << 20) + b"\"}")
        self.assertEqual(status, 413)
        self.assertEqual(raw("GET", "/v1/nothing")[0], 404)

    def test_metrics(self):
        self.complete(PROMPTS[1])
        status, text = raw("GET", "/metrics")
        self.assertEqual(status, 200)
        lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        self.assertGreaterEqual(int(lines['longhaul_requests_total{endpoint="/v1/completions",status="200"}']), 1)
        self.assertGreater(int(lines["longhaul_generated_tokens_total"]), 0)
        self.assertGreater(int(lines["longhaul_kv_capacity_bytes"]), 0)
        self.assertGreaterEqual(int(lines["longhaul_time_to_first_token_seconds_count"]), 1)
        self.assertEqual(int(lines["longhaul_prefix_cache_hits_total"]), 0)
        self.assertIn('longhaul_request_duration_seconds_bucket{le="+Inf"}', lines)


def main():
    global SERVER
    if not os.path.exists(SMOLLM2):
        print("SmolLM2 not installed (scripts/setup.sh); skipped")
        return 77
    SERVER = Server()
    try:
        result = unittest.main(argv=[sys.argv[0]], exit=False, verbosity=2).result
    finally:
        code = SERVER.stop()
        log = SERVER.stderr()
    ok = result.wasSuccessful()
    if code != 0:
        print(f"the server exited with {code} after SIGTERM, not 0")
        ok = False
    if not ok:
        print("server log:\n" + log[-6000:])
    print("server log lines per request:", sum(1 for l in log.splitlines() if " prompt_tokens=" in l))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
