#!/usr/bin/env python3
"""`longhaul serve` under load and faults (issue 13): 32 concurrent clients over a few hundred streaming requests, a
quarter of them abandoned mid-stream, mixed with malformed and oversized requests.

- Every request that is not abandoned completes correctly: greedy (temperature 0) streams whose text, finish_reason
  and usage equal `longhaul run --temp 0` on the same prompt; the bad requests get their status code and error.
- Abandoned requests ask for 1500 tokens and close the connection after three content chunks (raw http.client, so
  the close is real: half of them with a plain FIN, half with an RST): the server must cancel them, so after the run
  /metrics shows no running or queued sequence, and the KV bytes in use are exactly the prefix cache's one block
  (see KV_BYTES below).
- The server's RSS (/proc/PID/status VmRSS) after the run is within 10% of its RSS after a warm-up round of the same
  mix; /health, polled by a thread throughout, answers 200 every time; SIGTERM then stops it with exit code 0.

The queue has room for every client (--max-queue 56: 8 running + 56 waiting = 2 x 32 clients, abandoned requests
included until the server notices them), so every request must be admitted: a 429 is a failure here (the queue
limit itself is tested by the unit tests of the scheduler).

Usage: server_load_test.py LONGHAUL_BINARY. Exits 77 (skipped) when SmolLM2 is not installed.
LONGHAUL_LOAD_REQUESTS sets the number of requests of the run (default 256; 96 for an ASan build, see REQUESTS).
"""
import http.client
import json
import os
import queue
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_testing import PROMPTS, SKIP, free_port, model_installed, start_server, stop_process, wait_http  # noqa: E402

BINARY = sys.argv[1] if len(sys.argv) > 1 else "build/release/cli/longhaul"
MODEL = "smollm2-135m"
CTX = 2048
PARALLEL = 8
CLIENTS = 32
MAX_TOKENS = 12  # completed requests
ABANDON_MAX_TOKENS = 1500  # abandoned requests: left running they would keep the slots busy for minutes
ABANDON_AFTER_CHUNKS = 3
PAGE_TOKENS = 256  # the KV page and prefix-cache block size (--prefill-chunk too, see below)
SANITIZED = "asan" in BINARY
# Under ASan+UBSan every step is several times slower: fewer requests keep the test within its time limit while
# still running each kind of request (abandoned, bad, oversized) many times over.
REQUESTS = int(os.environ.get("LONGHAUL_LOAD_REQUESTS", "96" if SANITIZED else "256"))
# How long the server may take to end every sequence after the last client is done (ASan runs ~10x slower).
SETTLE_SECONDS = 600 if SANITIZED else 120
WARMUP_REQUESTS = 96  # one in eight bad: each of the 12 kinds of bad or broken request once
TIMEOUT = 300  # seconds a client waits on a socket

CHATS = ["What is the capital of France?", "Name three primary colors."]
# A few-shot preamble of more than one 256-token block (and, with the question and the reply, less than two):
# requests starting with it share their first block through the prefix cache, so the cache holds exactly one
# block after the run, whatever the order the requests came in.
# The questions' greedy answers must not be near ties, since a request answered in a batch is compared with
# `longhaul run` answering it alone, and the two sum in other orders (decode splits, prompt chunks). "23 times 3"
# was one: llama.cpp's logits for its second answer token, "7" and "6", are 34.681 and 34.663 (llama-cpp-python
# 0.3.36, SmolLM2 Q4_1), and a change of summation order in the attention kernel moved `longhaul run` from " 69" to
# " 79". The top two logits of every one of the 12 greedy tokens differ by at least 1.4 for "33 times 3" and "40
# times 3" in llama.cpp.
PREAMBLE = "".join(f"Question: what is {i} times 3? Answer: {3 * i}.\n" for i in range(1, 23))
CACHED = [PREAMBLE + "Question: what is 33 times 3? Answer:", PREAMBLE + "Question: what is 40 times 3? Answer:"]


def greedy_run(prompt, chat):
    """What `longhaul run --temp 0` generates for `prompt` (the reference of every completed stream)."""
    args = [BINARY, "run", "-m", MODEL, "-t", "2", "--temp", "0", "--json", "-n", str(MAX_TOKENS), "-c", str(CTX),
            "-b", str(PAGE_TOKENS), "-p", prompt]
    if chat:
        args.append("--chat")
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    return {"text": r["text"], "completion_tokens": len(r["tokens"]), "prompt_tokens": len(r["prompt_tokens"]),
            # run's own reason: a reply whose MAX_TOKENS-th token is the end of generation stopped, not ran out.
            "finish_reason": "length" if r["stop"] in ("length", "context") else "stop"}


class Target:
    """One prompt of the run: its request body and what a completed stream must give."""

    def __init__(self, prompt, chat):
        self.prompt, self.chat = prompt, chat
        self.path = "/v1/chat/completions" if chat else "/v1/completions"
        self.expected = greedy_run(prompt, chat)

    def body(self, max_tokens):
        b = {"model": MODEL, "max_tokens": max_tokens, "temperature": 0, "stream": True,
             "stream_options": {"include_usage": True}}
        if self.chat:
            b["messages"] = [{"role": "user", "content": self.prompt}]
        else:
            b["prompt"] = self.prompt
        return b


# Bad requests: (name, path, raw body, status, expected error fields).
def bad_requests():
    def dumps(obj):
        return json.dumps(obj).encode()

    long_prompt = "word " * (CTX + 50)  # one token per word at least: past the context
    return [
        ("malformed JSON", "/v1/completions", b'{"model": "smollm2-135m", "prompt": "x"', 400, {"code": "invalid_json"}),
        ("not an object", "/v1/chat/completions", b"[1, 2, 3]", 400, {"code": "invalid_json"}),
        ("max_tokens of the wrong type", "/v1/completions",
         dumps({"model": MODEL, "prompt": "x", "max_tokens": "ten"}), 400, {"param": "max_tokens", "code": "invalid_type"}),
        ("messages of the wrong type", "/v1/chat/completions",
         dumps({"model": MODEL, "messages": "hello", "stream": True}), 400, {"param": "messages", "code": "invalid_type"}),
        ("an unknown field", "/v1/completions",
         dumps({"model": MODEL, "prompt": "x", "stream": True, "frobnicate": 1}), 400,
         {"param": "frobnicate", "code": "unknown_parameter"}),
        ("no model", "/v1/completions", dumps({"prompt": "x"}), 400,
         {"param": "model", "code": "missing_required_parameter"}),
        ("an unknown model", "/v1/chat/completions",
         dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}), 404, {"code": "model_not_found"}),
        ("a prompt longer than the context", "/v1/completions",
         dumps({"model": MODEL, "prompt": long_prompt, "stream": True}), 400, {"code": "context_length_exceeded"}),
        ("max_tokens past the context", "/v1/completions",
         dumps({"model": MODEL, "prompt": "x", "max_tokens": CTX}), 400,
         {"param": "max_tokens", "code": "context_length_exceeded"}),
        # The server's body limit is 8 MiB (ServerOptions::max_body_bytes).
        ("a body over the size limit", "/v1/completions",
         b'{"model": "smollm2-135m", "prompt": "' + b"a" * (9 << 20) + b'"}', 413, {"code": "request_too_large"}),
    ]


class Failures:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, what):
        with self.lock:
            self.items.append(what)


def connect(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)


def sse_events(resp):
    """The JSON objects of a response's `data:` events, then the string "[DONE]"; stops early if the stream ends."""
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.rstrip(b"\r\n")
        if not line.startswith(b"data: "):
            continue  # blank separators and ": keep-alive" comments
        data = line[len(b"data: "):]
        if data == b"[DONE]":
            yield "[DONE]"
            return
        yield json.loads(data)


def chunk_text(event, chat):
    if not event["choices"]:
        return ""
    c = event["choices"][0]
    return (c["delta"].get("content") or "") if chat else c["text"]


def run_complete(port, target, failures):
    conn = connect(port)
    try:
        conn.request("POST", target.path, body=json.dumps(target.body(MAX_TOKENS)),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            return failures.add(f"{target.prompt!r}: status {resp.status}: {resp.read()[:300]!r}")
        text, finish, usage, done = "", None, None, False
        for e in sse_events(resp):
            if e == "[DONE]":
                done = True
                break
            if "error" in e:
                return failures.add(f"{target.prompt!r}: error event {e}")
            text += chunk_text(e, target.chat)
            if e["choices"] and e["choices"][0]["finish_reason"] is not None:
                finish = e["choices"][0]["finish_reason"]
            if e.get("usage"):
                usage = e["usage"]
        want = target.expected
        got = {"text": text, "finish_reason": finish, "done": done,
               "completion_tokens": usage and usage["completion_tokens"], "prompt_tokens": usage and usage["prompt_tokens"]}
        expected = dict(want, done=True)
        if got != expected:
            failures.add(f"{target.prompt!r}: got {got}, want {expected}")
    finally:
        conn.close()


def run_abandoned(port, target, rst, failures):
    """Reads ABANDON_AFTER_CHUNKS chunks with text, then closes the connection (an RST when `rst`)."""
    conn = connect(port)
    try:
        conn.request("POST", target.path, body=json.dumps(target.body(ABANDON_MAX_TOKENS)),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            return failures.add(f"abandoned {target.prompt!r}: status {resp.status}: {resp.read()[:300]!r}")
        n = 0
        for e in sse_events(resp):
            if e == "[DONE]" or "error" in e:
                return failures.add(f"abandoned {target.prompt!r}: the stream ended before it was abandoned: {e}")
            if chunk_text(e, target.chat):
                n += 1
                if n == ABANDON_AFTER_CHUNKS:
                    break
        if rst:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        resp.close()
    finally:
        conn.close()


def run_bad(port, case, failures):
    name, path, body, status, fields = case
    conn = connect(port)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read()
        try:
            error = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            return failures.add(f"{name}: status {resp.status}, not an OpenAI error body: {text[:300]!r}")
        got = {k: error.get(k) for k in fields}
        if resp.status != status or got != fields or not error.get("message"):
            failures.add(f"{name}: status {resp.status} {error}, want {status} {fields}")
    except (OSError, http.client.HTTPException) as e:
        failures.add(f"{name}: {type(e).__name__}: {e}")
    finally:
        conn.close()


def run_broken(port, kind, failures):
    """Requests that are not HTTP, or whose body never comes: the server answers 400 or drops the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        if kind == "garbage":
            s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
            first = s.recv(64)
            if not first.startswith(b"HTTP/1.1 400"):
                failures.add(f"a request line that is not HTTP: {first!r}, want HTTP/1.1 400")
        else:  # a body shorter than its Content-Length, then the client goes away
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"model\": \"smollm2-135m\", \"pro")


def make_jobs(n, targets, bad, seed):
    """n jobs: one in eight a bad request (or a broken one), the others streams, a quarter of those abandoned."""
    # A prompt whose reply ends within a few tokens cannot be abandoned mid-stream.
    long_replies = [t for t in targets if t.expected["finish_reason"] == "length"]
    jobs = []
    n_stream = 0
    for i in range(n):
        if i % 8 == 7:
            k = (i // 8) % (len(bad) + 2)
            jobs.append(("bad", bad[k]) if k < len(bad) else ("broken", "garbage" if k == len(bad) else "truncated"))
            continue
        k = i * 7 + i // len(targets)
        if n_stream % 4 == 3:
            jobs.append(("abandon", (long_replies[k % len(long_replies)], n_stream % 8 == 3)))
        else:
            jobs.append(("complete", targets[k % len(targets)]))
        n_stream += 1
    random.Random(seed).shuffle(jobs)
    return jobs


def run_round(port, jobs):
    """Runs `jobs` on CLIENTS threads; returns (failures, counts by kind)."""
    failures = Failures()
    todo = queue.Queue()
    for j in jobs:
        todo.put(j)
    counts = {}
    for kind, _ in jobs:
        counts[kind] = counts.get(kind, 0) + 1

    def client():
        while True:
            try:
                kind, arg = todo.get_nowait()
            except queue.Empty:
                return
            try:
                if kind == "complete":
                    run_complete(port, arg, failures)
                elif kind == "abandon":
                    run_abandoned(port, arg[0], arg[1], failures)
                elif kind == "bad":
                    run_bad(port, arg, failures)
                else:
                    run_broken(port, arg, failures)
            except Exception as e:  # noqa: BLE001 -- any client-side failure is a test failure, reported with the rest
                failures.add(f"{kind}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures.items, counts


def metrics(port):
    """The unlabelled samples of /metrics, by name."""
    conn = connect(port)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def settle(port, name):
    """/metrics once no sequence runs or waits any more (abandoned ones end at the server's next write to them), and
    the loop has published a step after the last one ended (the gauges are written one after another). Gives up after
    SETTLE_SECONDS and says so: a sequence still running then is a failure of its own, not a KV count to compare."""
    deadline = time.monotonic() + SETTLE_SECONDS
    idle_since = None
    while True:
        m = metrics(port)
        idle = (m["longhaul_running_sequences"], m["longhaul_queued_requests"]) == (0, 0)
        if idle and idle_since is not None and m["longhaul_steps_total"] == idle_since["longhaul_steps_total"]:
            return m, None
        idle_since = m if idle else None
        if time.monotonic() > deadline:
            return m, (f"after the {name}, still {m['longhaul_running_sequences']:.0f} running and "
                       f"{m['longhaul_queued_requests']:.0f} queued sequences {SETTLE_SECONDS} s later")
        time.sleep(0.2)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/PID/status")


class HealthPoller(threading.Thread):
    """GET /health every 50 ms on a new connection until stopped; keeps every answer that was not 200."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stopped = threading.Event()
        self.n_polls = 0
        self.bad = []

    def run(self):
        while not self.stopped.is_set():
            conn = connect(self.port)
            try:
                conn.request("GET", "/health")
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    self.bad.append((r.status, body[:200]))
            except (OSError, http.client.HTTPException) as e:
                self.bad.append((type(e).__name__, str(e)))
            finally:
                conn.close()
            self.n_polls += 1
            self.stopped.wait(0.05)


def main():
    if not model_installed():
        print("SKIP: SmolLM2 is not installed (scripts/setup.sh)")
        return SKIP
    started = time.monotonic()
    targets = [Target(p, False) for p in PROMPTS] + [Target(p, True) for p in CHATS] + [Target(p, False) for p in CACHED]
    for t in targets[-len(CACHED):]:
        assert PAGE_TOKENS < t.expected["prompt_tokens"] and \
            t.expected["prompt_tokens"] + ABANDON_MAX_TOKENS <= CTX and \
            t.expected["prompt_tokens"] + MAX_TOKENS < 2 * PAGE_TOKENS, t.expected
    bad = bad_requests()
    port = free_port()
    ok = True
    with tempfile.TemporaryDirectory(prefix="longhaul_load_") as tmp:
        log_path = os.path.join(tmp, "server.log")
        # --prefill-chunk 256: a prompt's chunks start at page boundaries whether or not its first block came from
        # the prefix cache, so a cached prompt computes what `run -b 256` computes.
        server = start_server(BINARY, port, ["-t", "2", "--parallel", str(PARALLEL), "-c", str(CTX),
                                             "--max-queue", "56", "--prefill-chunk", str(PAGE_TOKENS)],
                              log_path=log_path)
        health = None
        try:
            wait_http(port, "/health", timeout=300)
            health = HealthPoller(port)
            health.start()
            failures, _ = run_round(port, make_jobs(WARMUP_REQUESTS, targets, bad, seed=1))
            warm, stuck = settle(port, "warm-up")
            if stuck:
                failures.append(stuck)
            rss_warm = rss_kib(server.pid)
            round_started = time.monotonic()
            more, counts = run_round(port, make_jobs(REQUESTS, targets, bad, seed=2))
            failures += more
            after, stuck = settle(port, "run")
            if stuck:
                failures.append(stuck)
            rss_after = rss_kib(server.pid)
            health.stopped.set()
            health.join()
            print(f"run: {REQUESTS} requests on {CLIENTS} clients in {time.monotonic() - round_started:.1f} s: {counts}")
            print(f"RSS after warm-up {rss_warm} KiB, after the run {rss_after} KiB ({rss_after / rss_warm - 1:+.1%}); "
                  f"/health polled {health.n_polls} times")
            for f in failures:
                print("FAIL:", f)
            ok = not failures
            # Cancelled requests freed their places in the loop.
            if (after["longhaul_running_sequences"], after["longhaul_queued_requests"]) != (0, 0):
                print("FAIL: sequences left after the run:", after["longhaul_running_sequences"], "running,",
                      after["longhaul_queued_requests"], "queued")
                ok = False
            # The KV cache holds the prefix cache's one block of the preamble and nothing else: 256 cells of
            # bytes_per_cell each, bytes_per_cell being the admission budget over its --parallel x -c cells.
            bytes_per_cell = after["longhaul_kv_capacity_bytes"] / (PARALLEL * CTX)
            kv_bytes = PAGE_TOKENS * bytes_per_cell
            for name, m in (("warm-up", warm), ("run", after)):
                if m["longhaul_kv_used_bytes"] != kv_bytes:
                    print(f"FAIL: after the {name}, {m['longhaul_kv_used_bytes']:.0f} KV bytes in use, want "
                          f"{kv_bytes:.0f} (one cached block of {PAGE_TOKENS} cells)")
                    ok = False
            if after["longhaul_prefix_cache_hits_total"] <= warm["longhaul_prefix_cache_hits_total"]:
                print("FAIL: the preamble requests of the run took nothing from the prefix cache")
                ok = False
            if SANITIZED:
                # ASan keeps freed memory in its quarantine (resident by design): RSS says nothing about leaks
                # there; LeakSanitizer checks them at exit instead (the exit code below).
                print("RSS not compared: ASan build")
            elif abs(rss_after - rss_warm) > 0.10 * rss_warm:
                print(f"FAIL: RSS moved by more than 10% between the warm-up and the end of the run")
                ok = False
            if health.bad or health.n_polls == 0:
                print(f"FAIL: /health answered {len(health.bad)} of {health.n_polls} polls with something other than "
                      f"200: {health.bad[:5]}")
                ok = False
        finally:
            if health is not None:
                health.stopped.set()
            stop_process(server, timeout=120)
        if server.returncode != 0:
            print(f"FAIL: the server exited with {server.returncode} after SIGTERM, not 0")
            ok = False
        with open(log_path) as f:
            log = f.read()
        print("server log lines per request:", sum(1 for line in log.splitlines() if " prompt_tokens=" in line))
        if not ok:
            print("server log (end):\n" + log[-6000:])
    print(f"{'ok' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
