"""Studio timings in a real browser: cold start of `python app.py` to a usable page, first clip,
and live mode (keystroke -> a new 4-step clip playing), median over several keystrokes.

    python bench/studio.py [--keystrokes 7] [--screenshots docs/screenshots]

Uses Debian's chromium through Playwright; `RUSHES_HOME` is a fresh temp folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URL = "http://127.0.0.1:7860/"

from serving import wait_http


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keystrokes", type=int, default=7)
    ap.add_argument("--screenshots", default=None, help="folder for a screenshot of each tab")
    ap.add_argument("--random", action="store_true",
                    help="serve toyworld's architecture with random weights and 1/2/4-step students (speed only)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    env = os.environ | {"RUSHES_HOME": tempfile.mkdtemp()}
    began = time.perf_counter()
    command = [sys.executable, "app.py"]
    if args.random:
        from speed import random_toyworld  # bench/ is the script's own folder: on the path

        command = [sys.executable, "-m", "engine.cli", "serve", "--model",
                   str(random_toyworld(Path(tempfile.mkdtemp())))]
        began = time.perf_counter()
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_http(URL)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(URL)
            page.wait_for_selector("#generate")
            usable = time.perf_counter() - began
            page.locator("#seed input").fill("1")
            page.locator("#generate").click()
            page.wait_for_function("() => { const v = document.querySelector('#clip video');"
                                   " return v && v.readyState >= 2; }", timeout=120000)
            first_clip = time.perf_counter() - began
            page.locator("#live input").check()
            box = page.locator("#prompt textarea")
            latencies, requests = [], []  # requests: URLs the page fetched, per keystroke
            page.on("request", lambda r: requests[-1].append(r.url) if requests else None)
            for i in range(args.keystrokes + 1):
                src = page.evaluate("() => document.querySelector('#clip video').currentSrc")
                requests.append([])
                t = time.perf_counter()
                box.press("End")
                box.type("abcdefghijklmnopqrstuvwxyz"[i % 26])  # a new prompt each time: no text-cache hit
                page.wait_for_function(
                    "(old) => { const v = document.querySelector('#clip video');"
                    " return v && v.currentSrc !== old && v.readyState >= 2 && !v.paused; }",
                    arg=src, timeout=60000)
                if i:  # the first keystroke warms the path
                    latencies.append(time.perf_counter() - t)
            counted = [list(r) for r in requests[1:]]  # the first keystroke warms the path; copied before the screenshots add theirs
            rss = _rss(server.pid)  # after the live-mode clips: the studio warm
            if args.screenshots:
                shots = Path(args.screenshots)
                shots.mkdir(parents=True, exist_ok=True)
                page.locator("#live input").uncheck()
                for prompt in ("a cyan triangle growing on a forest-green background",
                               "a white box moving left on a charcoal background"):
                    page.locator("#prompt textarea").fill(prompt)
                    page.locator("#generate").click()
                    page.wait_for_function("(p) => document.querySelector('#status').innerText.includes('total')",
                                           arg=prompt, timeout=120000)
                    page.wait_for_timeout(1000)
                page.locator("#prompt textarea").fill("a yellow square falling on a navy background")
                page.locator("#compare input").check()
                page.locator("#generate").click()
                page.wait_for_function("() => document.querySelector('#teacher-status').innerText.includes('total')",
                                       timeout=300000)
                page.locator("#thumb-up").click()
                page.locator("#stars").get_by_text("4", exact=True).click()
                page.locator("#vocabulary").get_by_text("Words this model knows").click()
                page.wait_for_timeout(1500)
                page.screenshot(path=str(shots / "create.png"), full_page=True)
                page.get_by_role("tab", name="Tune").click()
                steps = page.locator("#tune-steps input[type=number]")
                steps.fill("10")
                steps.press("Enter")
                page.locator("#tune-name textarea").fill("vivid")
                page.locator("#tune-start").click()
                page.wait_for_function("() => /done/.test(document.querySelector('#tune-status').innerText)",
                                       timeout=600000)
                page.wait_for_timeout(2500)
                page.screenshot(path=str(shots / "tune.png"), full_page=True)
                for tab in ("Library", "System"):
                    page.get_by_role("tab", name=tab).click()  # each fills when opened
                    page.wait_for_timeout(3000)
                    page.screenshot(path=str(shots / f"{tab.lower()}.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait()
    print("| measure | value |\n|---|---|")
    print(f"| `python app.py` -> page usable | {usable:.2f} s |")
    print(f"| `python app.py` -> first clip playing | {first_clip:.2f} s |")
    print(f"| live mode: keystroke -> new clip playing (median of {len(latencies)}) | "
          f"{statistics.median(latencies):.3f} s (min {min(latencies):.3f}, max {max(latencies):.3f}) |")
    print(f"| live mode: requests per keystroke (median) | {statistics.median(len(r) for r in counted):.0f} "
          f"(queue joins {sum('queue/join' in u for r in counted for u in r)}, "
          f"ffmpeg.wasm fetches {sum('ffmpeg' in u for r in counted for u in r)} over {len(counted)} keystrokes) |")
    print(f"| resident memory after live mode: studio process / its engine process(es) | "
          f"{rss[0] / 2**20:.0f} MiB / {' + '.join(f'{r / 2**20:.0f}' for r in rss[1:]) or '-'} MiB |")


def _rss(pid: int) -> list[int]:
    """Resident bytes of the server process, then of each process it started (the engine's worker)."""
    import psutil

    server = psutil.Process(pid)
    return [server.memory_info().rss] + [c.memory_info().rss for c in server.children(recursive=True)]


if __name__ == "__main__":
    main()
