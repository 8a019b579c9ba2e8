"""Helpers of the Python serving tests: free loopback ports, a `longhaul serve` process started and stopped."""
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

SKIP = 77  # ctest's SKIP_RETURN_CODE for these tests

# Prompts whose greedy continuations have no near-tie on SmolLM2 (tests/integration/batch_cli_test.cc uses the same
# ones): batched steps may move logits by a few hundredths, which only a near-tie would notice.
PROMPTS = [
    "Once upon a time",
    "def fibonacci(n):",
    "The three laws of thermodynamics are",
    "1, 2, 3, 4, 5,",
    "My favourite recipe for pancakes",
    "The quick brown fox",
    "Water boils at",
    "The largest planet in the solar system is",
]


def model_installed():
    models = os.environ.get("LONGHAUL_MODELS", os.path.expanduser("~/.cache/longhaul/models"))
    return os.path.isdir(models) and any("smollm2" in name.lower() for name in os.listdir(models))


def find_program(*names):
    """The first of `names` on PATH or in /usr/sbin, /usr/bin (Debian's nginx is in /usr/sbin), or None."""
    for name in names:
        for path in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
            if path and os.access(path, os.X_OK):
                return path
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary, port, extra_args=(), log_path=os.devnull):
    """A `longhaul serve` on 127.0.0.1:port with SmolLM2; its output goes to log_path."""
    log = open(log_path, "w")
    return subprocess.Popen([binary, "serve", "-m", "smollm2-135m", "--host", "127.0.0.1", "--port", str(port),
                             *extra_args], stdout=log, stderr=subprocess.STDOUT)


def wait_http(port, path, timeout):
    """Waits until GET path answers 200 (the server answers 503 while it loads)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"127.0.0.1:{port}{path} did not answer 200 within {timeout} s (last: {last})")


def stop_process(p, timeout=30):
    """SIGTERM (the server's clean shutdown), then SIGKILL if it hangs."""
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
