#!/usr/bin/env python3
"""The chat page at / in headless Chromium, driven by Selenium: type a message, see the reply stream in (the
assistant's bubble grows while the request runs, and ends with the text the server generated), with the live
tokens/s shown.

Usage: chat_page_test.py LONGHAUL_BINARY. Exits 77 (skipped) when Chromium, chromedriver, Selenium or the model is
not installed.
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_testing import SKIP, find_program, free_port, model_installed, start_server, stop_process, wait_http  # noqa: E402


def main():
    binary = sys.argv[1]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
    except ImportError:
        print("SKIP: Selenium is not installed (scripts/setup.sh installs python3-selenium)")
        return SKIP
    chromium, driver = find_program("chromium", "chromium-browser"), find_program("chromedriver")
    if chromium is None or driver is None:
        print("SKIP: chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
        return SKIP
    if not model_installed():
        print("SKIP: SmolLM2 is not installed (scripts/setup.sh)")
        return SKIP

    tmp = tempfile.mkdtemp(prefix="longhaul_chat_page_")
    port = free_port()
    server = start_server(binary, port, ["--parallel", "1", "-c", "1024", "-t", "2"],
                          log_path=os.path.join(tmp, "server.log"))
    browser = None
    try:
        wait_http(port, "/health", timeout=120)
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp}/profile"):
            options.add_argument(flag)
        browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        browser.get(f"http://127.0.0.1:{port}/")
        assert "longhaul" in browser.title, browser.title
        # Greedy and long enough to watch it stream.
        temperature = browser.find_element(By.ID, "temperature")
        temperature.clear()
        temperature.send_keys("0")
        max_tokens = browser.find_element(By.ID, "max-tokens")
        max_tokens.clear()
        max_tokens.send_keys("48")

        box = browser.find_element(By.ID, "input")
        box.send_keys("Write a short poem about the sea.")
        box.send_keys(Keys.ENTER)

        # The reply bubble's text, sampled while the request runs: streaming shows it growing.
        lengths = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            bubbles = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")
            errors = browser.find_elements(By.CSS_SELECTOR, ".msg.error")
            assert not errors, "the page shows an error: " + errors[0].text
            text = bubbles[-1].text if bubbles else ""
            if not lengths or len(text) != lengths[-1]:
                lengths.append(len(text))
            if browser.find_element(By.ID, "send-button").is_enabled() and text:
                break  # the request ended
            time.sleep(0.02)
        else:
            raise AssertionError("no complete reply within 120 s")
        user = browser.find_elements(By.CSS_SELECTOR, ".msg.user")
        assert user and user[-1].text == "Write a short poem about the sea.", [u.text for u in user]
        reply = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].text
        assert reply.strip(), "empty reply"
        # Streamed: the bubble was seen with at least two partial lengths before the whole reply.
        partial = [n for n in lengths if 0 < n < len(reply)]
        assert len(partial) >= 2, f"the reply did not stream (lengths seen: {lengths}, final {len(reply)})"
        stats = browser.find_element(By.ID, "stats").text
        assert "tokens/s" in stats and "reply" in stats, stats
        print(f"ok: a {len(reply)}-character reply streamed in {len(partial)} visible steps; {stats}")
        return 0
    finally:
        if browser is not None:
            browser.quit()
        stop_process(server)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
