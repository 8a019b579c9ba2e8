#!/usr/bin/env python3
"""deploy/nginx-longhaul.conf on loopback: two `longhaul serve` replicas behind nginx (run as the test's own user,
with a temporary prefix and config). Requests of different sessions reach both replicas, every request of one
session reaches the same replica, and a completion through the proxy is served.

Usage: nginx_sticky_test.py LONGHAUL_BINARY. Exits 77 (skipped) when nginx or the model is not installed.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_testing import SKIP, find_program, free_port, model_installed, start_server, stop_process, wait_http  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def request(port, path, session=None, body=None):
    """(status, X-Longhaul-Upstream, body) of one request through nginx."""
    headers = {"Content-Type": "application/json"}
    if session is not None:
        headers["X-Session-Id"] = session
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, r.headers.get("X-Longhaul-Upstream"), r.read()


def main():
    binary = sys.argv[1]
    nginx = find_program("nginx")
    if nginx is None:
        print("SKIP: nginx is not installed (scripts/setup.sh installs nginx-light)")
        return SKIP
    if not model_installed():
        print("SKIP: SmolLM2 is not installed (scripts/setup.sh)")
        return SKIP
    tmp = tempfile.mkdtemp(prefix="longhaul_nginx_")
    processes = []
    try:
        replica_ports = [free_port(), free_port()]
        for port in replica_ports:
            processes.append(start_server(binary, port, ["--parallel", "2", "-c", "512", "-t", "1"],
                                          log_path=os.path.join(tmp, f"replica_{port}.log")))
        proxy_port = free_port()
        with open(os.path.join(REPO, "deploy", "nginx-longhaul.conf")) as f:
            site = f.read()
        site = (site.replace("127.0.0.1:8081", f"127.0.0.1:{replica_ports[0]}")
                    .replace("127.0.0.1:8082", f"127.0.0.1:{replica_ports[1]}")
                    .replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{proxy_port}"))
        assert str(proxy_port) in site and str(replica_ports[1]) in site, "the deploy config's addresses changed"
        with open(os.path.join(tmp, "longhaul.conf"), "w") as f:
            f.write(site)
        # The Debian main config's essentials, every path inside the temporary prefix. As root, workers would
        # switch to "nobody", which cannot read the prefix: they stay the test's user.
        user = "user root;\n" if os.geteuid() == 0 else ""
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(f"""{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/longhaul.conf;
}}
""")
        test = subprocess.run([nginx, "-t", "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")],
                              capture_output=True, text=True)
        assert test.returncode == 0, "nginx -t refused the config:\n" + test.stderr
        processes.append(subprocess.Popen([nginx, "-p", tmp, "-c", os.path.join(tmp, "nginx.conf")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in replica_ports:
            wait_http(port, "/health", timeout=120)
        wait_http(proxy_port, "/health", timeout=30)

        replicas = {f"127.0.0.1:{p}" for p in replica_ports}
        # Sessions spread over both replicas, and each sticks to its own.
        seen = {}
        for i in range(24):
            session = f"conversation-{i}"
            for _ in range(3):
                status, upstream, _ = request(proxy_port, "/v1/models", session)
                assert status == 200, status
                assert upstream in replicas, f"answered by {upstream!r}, not a replica"
                assert seen.setdefault(session, upstream) == upstream, \
                    f"session {session} moved from {seen[session]} to {upstream}"
        assert set(seen.values()) == replicas, f"24 sessions all went to {set(seen.values())}"
        # Without a session, requests spread too (each is its own key).
        loose = {request(proxy_port, "/v1/models")[1] for _ in range(24)}
        assert loose == replicas, f"24 requests without a session all went to {loose}"
        # A completion is served through the proxy, by the session's replica.
        body = {"model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
        status, upstream, raw = request(proxy_port, "/v1/completions", "conversation-0", body)
        assert status == 200 and upstream == seen["conversation-0"], (status, upstream)
        reply = json.loads(raw)
        assert reply["usage"]["completion_tokens"] > 0 and reply["choices"][0]["text"], reply
        print(f"ok: 24 sessions over {len(replicas)} replicas, each sticky; a completion served: "
              f"{reply['choices'][0]['text']!r}")
        return 0
    finally:
        for p in reversed(processes):
            stop_process(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
