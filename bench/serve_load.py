#!/usr/bin/env python3
"""Serving load generator: `longhaul serve` next to llama.cpp's `llama-server`, the same requests to both.

The benchmark (from the repository root, after `bash scripts/build.sh release` and `bash bench/build_llama_server.sh`;
on a quiet machine; one command per mix, so that each prints its table when it is done, in the order of what the
issue asks first; every command runs both servers, -t 2, --parallel 8):
  python3 bench/serve_load.py --mix short --clients 1,4,8,16 --requests-per-client 4 --max-tokens 128 \
      --json-out /tmp/serve_load_short.json
  python3 bench/serve_load.py --mix short+long --clients 1,4,8,16 --requests-per-client 4 --max-tokens 128 \
      --long-max-tokens 32 --json-out /tmp/serve_load_short_long.json
  python3 bench/serve_load.py --mix long --clients 1,4,8,16 --long-requests-per-client 1 --long-max-tokens 32 \
      --json-out /tmp/serve_load_long.json
  python3 bench/serve_load.py --cached-prefix --prefix-trials 3 --max-tokens 16 --json-out /tmp/serve_load_prefix.json
The time is llama-server's prompt processing: the long mix feeds 29 prompts of ~4K tokens to each server (+ the
short+long mix's long arrivals), so at llama-server's 55 tokens/s seen on a loaded machine (a smoke run while
other jobs built) the long mix alone would take ~35 minutes there; at a few hundred tokens/s, a few minutes. Run
the smoke run first, with --log-dir, and read the "prompt eval time" lines of llama-server's log there to decide.
A smoke run (function only): --clients 1,2 --requests-per-client 2 --long-requests-per-client 1 --max-tokens 8

The script starts each server itself (the binaries: --longhaul, default build/release/cli/longhaul; --llama-server,
default ~/.cache/longhaul/llama-server/bin/llama-server), on a free loopback port, with the same GGUF (-m), the same
threads (-t), the same parallel slots (--parallel) and the same context per sequence (--ctx, enough for a long
prompt and its reply): longhaul `serve --parallel P -c CTX`; llama-server `-np P -c P*CTX` (llama-server divides -c
among its slots). It waits for /health, runs the client counts one after the other, and stops it (SIGTERM).

Requests: POST /v1/completions, streaming, temperature 0, a fixed max_tokens, stream_options.include_usage, and
`ignore_eos: true` where the server accepts it (llama-server does; the script asks each server once and says what it
found), so that every request generates max_tokens tokens. The prompts are cut from the text `longhaul eval --task ppl`
reads by default (every regular file of /usr/share/common-licenses, sorted, each followed by a blank line), at
deterministic offsets, each starting with its own "Request N." line so that no two prompts share a prefix (neither
server's prompt cache helps, outside --cached-prefix). Lengths are in characters, calibrated once with `longhaul
tokenize`; the tables give the mean prompt tokens the server reported.

Mixes (each client sends its requests one after the other):
  short        --requests-per-client requests of ~200 prompt tokens
  long         --long-requests-per-client requests of ~4K prompt tokens
  short+long   the short mix, while one more client sends long prompts back to back until the short clients are done:
               long prompts arriving during streaming, where decode-first chunked prefill (SARATHI, Agrawal et al.,
               2023) should keep the streams' inter-token latency lower than whole-prompt batches
--cached-prefix: per trial, a request with a ~2K-token prefix, then one sharing that prefix (a different ending);
  time to first token of the second, prefix cache on against off (longhaul: a second server with --no-prefix-cache;
  llama-server: the request field cache_prompt true / false), one client.

Measured by the client: time to first token = request sent -> first chunk with text; inter-token latency = the gaps
between consecutive chunks with text of one stream. A chunk may carry more than one token (text held back, an
incomplete UTF-8 character), so the tables give tokens per chunk (usage.completion_tokens / chunks with text): at
1.00 every gap is one token's latency. Generated tokens/s = the sum of usage.completion_tokens / wall time from the
first request sent to the last reply done. In short+long, TTFT and ITL are the short streams'; the long prompts'
TTFT has its own column.

Output: a Markdown table per mix, rows per (server, clients), and the longhaul / llama-server throughput ratio;
--json-out FILE writes every request's record and the summaries. A progress line goes to stderr.
"""
import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

DEFAULT_MODEL = os.path.expanduser("~/.cache/longhaul/models/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_LLAMA_SERVER = os.path.expanduser("~/.cache/longhaul/llama-server/bin/llama-server")
TEXT_DIR = "/usr/share/common-licenses"
SHORT_TOKENS, LONG_TOKENS, PREFIX_TOKENS = 200, 4096, 2048


def eval_text():
    """longhaul's default eval text (src/eval/tasks/ppl.cc default_eval_text): regular files, sorted, + blank line."""
    names = sorted(n for n in os.listdir(TEXT_DIR)
                   if os.path.isfile(os.path.join(TEXT_DIR, n)) and not os.path.islink(os.path.join(TEXT_DIR, n)))
    if not names:
        sys.exit(f"{TEXT_DIR} is empty: the prompts are cut from it (Debian's base-files)")
    parts = []
    for n in names:
        with open(os.path.join(TEXT_DIR, n), encoding="utf-8", errors="replace") as f:
            parts.append(f.read() + "\n\n")
    return "".join(parts)


class Prompts:
    """Deterministic prompts of about n tokens cut from the eval text."""

    def __init__(self, longhaul, model):
        self.text = eval_text()
        sample = self.text[:20000]
        out = subprocess.run([longhaul, "tokenize", "-m", model, "--no-bos", sample], capture_output=True, text=True,
                             check=True)
        self.chars_per_token = len(sample) / len(json.loads(out.stdout))

    def cut(self, n_tokens, key):
        n_chars = int(n_tokens * self.chars_per_token)
        span = len(self.text) - n_chars
        if span <= 0:
            sys.exit(f"the eval text has {len(self.text)} characters, fewer than a prompt of {n_tokens} tokens needs")
        offset = (key * 7919 * 104729) % span
        return self.text[offset:offset + n_chars]

    def prompt(self, n_tokens, key):
        return f"Request {key}.\n" + self.cut(n_tokens, key)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One server on a free loopback port, started and waited for; stop() sends SIGTERM."""

    def __init__(self, kind, args, log_dir, extra=()):
        self.kind = kind
        self.port = free_port()
        if kind == "longhaul":
            cmd = [args.longhaul, "serve", "-m", args.model, "-t", str(args.threads), "--parallel", str(args.parallel),
                   "-c", str(args.ctx), "--max-queue", "256", "--host", "127.0.0.1", "--port", str(self.port), *extra]
        else:
            cmd = [args.llama_server, "-m", args.model, "-t", str(args.threads), "-np", str(args.parallel),
                   "-c", str(args.ctx * args.parallel), "--host", "127.0.0.1", "--port", str(self.port), *extra]
        self.label = kind + ("" if not extra else " " + " ".join(extra))
        self.log_path = os.path.join(log_dir, f"{kind}-{self.port}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.command = " ".join(cmd)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"{self.command} exited with {self.proc.returncode}; its log: {self.log_path}")
            try:
                status, _ = request(self.port, "GET", "/health")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                sys.exit(f"{self.command} did not answer /health within 300 s; its log: {self.log_path}")
            time.sleep(0.25)
        _, models = request(self.port, "GET", "/v1/models")
        self.model_id = models["data"][0]["id"]
        # ignore_eos: llama-server's field; a server that does not know it answers 400 and the runs go without it.
        status, _ = request(self.port, "POST", "/v1/completions",
                            {"model": self.model_id, "prompt": "Hi", "max_tokens": 1, "ignore_eos": True})
        self.ignore_eos = status == 200

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data
    finally:
        conn.close()


def stream_completion(server, prompt, max_tokens, extra=None):
    """One streaming completion; the client's own timings. Returns a record (dict)."""
    body = {"model": server.model_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if server.ignore_eos:
        body["ignore_eos"] = True
    body.update(extra or {})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1800)
    rec = {"sent": time.monotonic(), "chunk_times": [], "completion_tokens": None, "prompt_tokens": None, "error": None}
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            rec["error"] = f"status {resp.status}: {resp.read()[:300]!r}"
            return rec
        while True:
            line = resp.readline()
            if not line:
                rec["error"] = "the stream ended before [DONE]"
                break
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                break
            now = time.monotonic()
            event = json.loads(data)
            if event.get("choices") and event["choices"][0].get("text"):
                rec["chunk_times"].append(now)
            if event.get("usage"):
                rec["completion_tokens"] = event["usage"]["completion_tokens"]
                rec["prompt_tokens"] = event["usage"]["prompt_tokens"]
    except (OSError, http.client.HTTPException, ValueError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    rec["done"] = time.monotonic()
    if rec["completion_tokens"] is None and not rec["error"]:
        # A server that sends no usage chunk: count the chunks with text (a lower bound; the table's tokens/chunk
        # then reads 1.00 and the record says so).
        rec["completion_tokens"] = len(rec["chunk_times"])
        rec["usage_missing"] = True
    return rec


def percentile(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    x = (len(v) - 1) * q
    i = int(x)
    return v[i] if i + 1 >= len(v) else v[i] + (v[i + 1] - v[i]) * (x - i)


class Progress:
    def __init__(self, label, total):
        self.label, self.total, self.n, self.lock = label, total, 0, threading.Lock()

    def tick(self):
        with self.lock:
            self.n += 1
            print(f"\r{self.label}: {self.n}/{self.total} requests", end="", file=sys.stderr, flush=True)


def run_mix(server, mix, n_clients, args, prompts, key_base):
    """One (server, mix, clients) run; returns (records, wall seconds)."""
    n_short = args.requests_per_client if mix != "long" else 0
    n_long = args.long_requests_per_client if mix == "long" else 0
    total = n_clients * (n_short + n_long)
    progress = Progress(f"{server.label} {mix} x{n_clients}", total)
    records = []
    lock = threading.Lock()
    short_done = threading.Event()

    def send(kind, key):
        rec = stream_completion(server, prompts.prompt(SHORT_TOKENS if kind == "short" else LONG_TOKENS, key),
                                args.max_tokens if kind == "short" else args.long_max_tokens)
        rec["kind"] = kind
        with lock:
            records.append(rec)
        progress.tick()

    # Keys (and so prompts) differ between every request of a run and between runs: key_base is a multiple of 1e6.
    def client(c):
        for r in range(n_short):
            send("short", key_base + c * 1000 + r)
        for r in range(n_long):
            send("long", key_base + c * 1000 + 500 + r)

    def long_arrivals():
        # Long prompts back to back while the short streams run: the first once the short clients have started.
        r = 0
        while not short_done.wait(0.5 if r == 0 else 0):
            send("long", key_base + 900_000 + r)
            r += 1

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    extra = threading.Thread(target=long_arrivals) if mix == "short+long" else None
    if extra:
        extra.start()
    for t in threads:
        t.join()
    short_done.set()
    if extra:
        extra.join()
    wall = time.monotonic() - start
    print(file=sys.stderr)
    return records, wall


def summarize(records, wall, mix):
    ok = [r for r in records if not r["error"]]
    victims = [r for r in ok if r["kind"] == ("short" if mix != "long" else "long")]
    ttft = [(r["chunk_times"][0] - r["sent"]) * 1e3 for r in victims if r["chunk_times"]]
    itl = [(b - a) * 1e3 for r in victims for a, b in zip(r["chunk_times"], r["chunk_times"][1:])]
    n_chunks = sum(len(r["chunk_times"]) for r in ok)
    tokens = sum(r["completion_tokens"] for r in ok)
    long_ttft = [(r["chunk_times"][0] - r["sent"]) * 1e3 for r in ok if r["kind"] == "long" and r["chunk_times"]]
    prompt_tokens = [r["prompt_tokens"] for r in victims if r["prompt_tokens"]]
    return {"requests": len(records), "errors": len(records) - len(ok), "generated_tokens": tokens,
            "wall_seconds": wall, "tokens_per_second": tokens / wall if wall > 0 else float("nan"),
            "ttft_p50_ms": percentile(ttft, 0.5), "ttft_p99_ms": percentile(ttft, 0.99),
            "itl_p50_ms": percentile(itl, 0.5), "itl_p99_ms": percentile(itl, 0.99),
            "tokens_per_chunk": tokens / n_chunks if n_chunks else float("nan"),
            "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens) if prompt_tokens else float("nan"),
            "long_ttft_p50_ms": percentile(long_ttft, 0.5), "n_long": sum(1 for r in ok if r["kind"] == "long")}


def print_mix_table(mix, rows):
    """rows: {(server, clients): summary}."""
    long_col = mix == "short+long"
    head = ["server", "clients", "requests", "prompt tokens", "gen tok/s", "TTFT p50 ms", "TTFT p99 ms",
            "ITL p50 ms", "ITL p99 ms", "tokens/chunk"] + (["long prompts", "long TTFT p50 ms"] if long_col else []) + \
           ["longhaul / llama-server"]
    print(f"\n### mix: {mix}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (server, clients), s in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ratio = ""
        other = rows.get(("llama-server", clients))
        if server == "longhaul" and other and other["tokens_per_second"] > 0:
            ratio = f"**{s['tokens_per_second'] / other['tokens_per_second']:.2f}**"
        cells = [server, str(clients), f"{s['requests']}" + (f" ({s['errors']} failed)" if s["errors"] else ""),
                 f"{s['mean_prompt_tokens']:.0f}", f"{s['tokens_per_second']:.1f}", f"{s['ttft_p50_ms']:.0f}",
                 f"{s['ttft_p99_ms']:.0f}", f"{s['itl_p50_ms']:.1f}", f"{s['itl_p99_ms']:.1f}",
                 f"{s['tokens_per_chunk']:.2f}"]
        if long_col:
            cells += [str(s["n_long"]), f"{s['long_ttft_p50_ms']:.0f}"]
        print("| " + " | ".join(cells + [ratio]) + " |")
    sys.stdout.flush()


def run_cached_prefix(server, args, prompts, cache_on, key_base):
    """Per trial: a ~2K-token prefix + ending A, then the same prefix + ending B; TTFT of both."""
    extra = {} if server.kind == "longhaul" else {"cache_prompt": cache_on}
    out = []
    for t in range(args.prefix_trials):
        prefix = prompts.prompt(PREFIX_TOKENS, key_base + t)
        first = stream_completion(server, prefix + "\n\nQuestion A: what does this text say about copies?",
                                  args.max_tokens, extra)
        second = stream_completion(server, prefix + "\n\nQuestion B: who may change this text?", args.max_tokens, extra)
        for r in (first, second):
            if r["error"] or not r["chunk_times"]:
                sys.exit(f"{server.label}: cached-prefix request failed: {r['error']}")
        out.append({"first_ttft_ms": (first["chunk_times"][0] - first["sent"]) * 1e3,
                    "second_ttft_ms": (second["chunk_times"][0] - second["sent"]) * 1e3,
                    "prompt_tokens": second["prompt_tokens"]})
        print(f"\r{server.label} cached-prefix (cache {'on' if cache_on else 'off'}): {t + 1}/{args.prefix_trials}",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="longhaul,llama-server", help="comma list: longhaul, llama-server")
    p.add_argument("--longhaul", default="build/release/cli/longhaul", help="the longhaul binary")
    p.add_argument("--llama-server", default=DEFAULT_LLAMA_SERVER, help="the llama-server binary")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help="GGUF file, served by both")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--parallel", type=int, default=8, help="parallel slots (sequences generating at once)")
    p.add_argument("--ctx", type=int, default=4096 + 512, help="context per sequence: a long prompt + its reply")
    p.add_argument("--clients", default="1,4,8,16", help="comma list of concurrent client counts")
    p.add_argument("--mix", default="short,long,short+long", help="comma list: short, long, short+long")
    p.add_argument("--requests-per-client", type=int, default=4, help="short requests per client")
    p.add_argument("--long-requests-per-client", type=int, default=1, help="long requests per client (mix long)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens generated per short request")
    p.add_argument("--long-max-tokens", type=int, default=32, help="tokens generated per long request")
    p.add_argument("--cached-prefix", action="store_true",
                   help="instead of the mixes: TTFT with a shared 2K-token prefix, cache on against off")
    p.add_argument("--prefix-trials", type=int, default=5)
    p.add_argument("--json-out", help="write every request's record and the summaries here")
    p.add_argument("--log-dir", help="keep the servers' logs in this directory (default: a temporary one)")
    args = p.parse_args()

    servers = [s for s in args.server.split(",") if s]
    for s in servers:
        if s not in ("longhaul", "llama-server"):
            p.error(f"--server: unknown server '{s}' (longhaul, llama-server)")
    mixes = [m for m in args.mix.split(",") if m]
    for m in mixes:
        if m not in ("short", "long", "short+long"):
            p.error(f"--mix: unknown mix '{m}' (short, long, short+long)")
    clients = [int(c) for c in args.clients.split(",") if c]
    if not os.path.exists(args.model):
        p.error(f"-m: no such file {args.model}")
    for s, path in (("longhaul", args.longhaul), ("llama-server", args.llama_server)):
        if (s in servers or s == "longhaul") and not os.access(path, os.X_OK):
            p.error(f"the {s} binary {path} is missing (scripts/build.sh release; bench/build_llama_server.sh)")
    if args.ctx < LONG_TOKENS + 256 + max(args.max_tokens, args.long_max_tokens):
        p.error(f"--ctx {args.ctx}: a long prompt of ~{LONG_TOKENS} tokens and its reply do not fit")

    # SIGTERM (a timeout, a killed job) unwinds like Ctrl-C, so that the finally blocks stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    prompts = Prompts(args.longhaul, args.model)
    results = {"args": vars(args), "runs": []}
    print(f"# serve_load: {os.path.basename(args.model)}, -t {args.threads}, {args.parallel} parallel slots, "
          f"{args.ctx} tokens per sequence, max_tokens {args.max_tokens} (long: {args.long_max_tokens})")
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    with (contextlib.nullcontext(args.log_dir) if args.log_dir else tempfile.TemporaryDirectory(prefix="serve_load_")) \
            as log_dir:
        if args.cached_prefix:
            print("\n### cached prefix: time to first token of a request sharing a ~2K-token prefix with the one before\n")
            print("| server | prefix cache | prompt tokens | 1st request TTFT p50 ms | 2nd request TTFT p50 ms | speed-up |")
            print("|---|---|---|---|---|---|")
            for kind in servers:
                for cache_on in (True, False):
                    extra = ("--no-prefix-cache",) if kind == "longhaul" and not cache_on else ()
                    server = ServerProcess(kind, args, log_dir, extra)
                    try:
                        trials = run_cached_prefix(server, args, prompts, cache_on, key_base=5000)
                    finally:
                        server.stop()
                    first = percentile([t["first_ttft_ms"] for t in trials], 0.5)
                    second = percentile([t["second_ttft_ms"] for t in trials], 0.5)
                    results["runs"].append({"server": kind, "cached_prefix": cache_on, "command": server.command,
                                            "trials": trials})
                    print(f"| {kind} | {'on' if cache_on else 'off'} | {trials[0]['prompt_tokens']} | {first:.0f} | "
                          f"{second:.0f} | {first / second:.2f}x |", flush=True)
        else:
            tables = {m: {} for m in mixes}
            for kind in servers:
                server = ServerProcess(kind, args, log_dir)
                if not server.ignore_eos:
                    print(f"note: {kind} does not accept ignore_eos: its requests may end early at an end-of-generation "
                          f"token (the tables count the tokens it reported)", file=sys.stderr)
                try:
                    for i, mix in enumerate(mixes):
                        for n_clients in clients:
                            records, wall = run_mix(server, mix, n_clients, args, prompts,
                                                    key_base=(i * 1000 + n_clients) * 1_000_000)
                            summary = summarize(records, wall, mix)
                            tables[mix][(kind, n_clients)] = summary
                            print(f"{kind} {mix} x{n_clients}: {summary['tokens_per_second']:.1f} tok/s, TTFT p50 "
                                  f"{summary['ttft_p50_ms']:.0f} ms, ITL p50 {summary['itl_p50_ms']:.1f} ms, "
                                  f"{summary['errors']} failed", file=sys.stderr)
                            results["runs"].append({"server": kind, "mix": mix, "clients": n_clients,
                                                    "command": server.command, "ignore_eos": server.ignore_eos,
                                                    "summary": summary, "records": records})
                finally:
                    server.stop()
            for mix in mixes:
                print_mix_table(mix, tables[mix])
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
