"""The Stream panel as a new user meets it: `python app.py` on the shipped model, Debian's
chromium driven by Playwright; Play, a prompt edit while it plays, Stop. Prints how long after the
click the first frame was on screen and the panel's own status lines (first chunk, median chunk).

    python bench/stream_browser.py [--port 7871] [--shots DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

STATUS = "(document.querySelector('#stream-status') || {}).innerText || ''"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7871)
    ap.add_argument("--shots", default=None, help="folder for screenshots of the panel")
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen([sys.executable, "app.py"], cwd=root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=os.environ | {"GRADIO_SERVER_PORT": str(args.port)})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            began = time.perf_counter()
            for _ in range(120):
                try:
                    page.goto(f"http://127.0.0.1:{args.port}")
                    break
                except Exception:
                    time.sleep(1)
            print(f"page loaded {time.perf_counter() - began:.1f} s after start")
            page.locator("#stream").get_by_text("Stream: an endless clip").click()
            page.locator("#prompt textarea").fill("a yellow square moving right on a navy background")
            clicked = time.perf_counter()
            page.locator("#stream-play").click()
            page.wait_for_function(f"() => ({STATUS}).includes('streaming')", timeout=60000)
            print(f"first frame on screen {time.perf_counter() - clicked:.2f} s after Play")
            time.sleep(6)
            if args.shots:
                page.locator("#stream").screenshot(path=str(Path(args.shots) / "stream.png"))
            page.locator("#prompt textarea").fill("a cyan circle rising on a navy background")
            page.wait_for_function(f"() => ({STATUS}).includes('prompt: a cyan circle')", timeout=60000)
            time.sleep(4)
            print(page.locator("#stream-status").inner_text())
            page.locator("#stream-stop").click()
            page.wait_for_function(f"() => ({STATUS}).includes('saved stream')", timeout=60000)
            print(page.locator("#stream-status").inner_text())
            browser.close()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
