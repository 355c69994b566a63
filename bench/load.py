"""Load test: N concurrent generate requests through gradio_client while a tune job runs.

Starts `rushes serve` on toyworld's architecture (random weights with 1/2/4-step students,
see bench/speed.py; speed does not depend on the weights) in a fresh RUSHES_HOME, starts a
background tune through the API, then fires N generate requests at once from N threads.
Prints successes, "queue full" refusals and other errors, latency percentiles of the
successes, whether the tune kept stepping, and a check that the app still answers.

    python bench/load.py [--requests 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URL = "http://127.0.0.1:7861/"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--tune-steps", type=int, default=1000)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from gradio_client import Client
    from serving import wait_http
    from speed import random_toyworld

    home = tempfile.mkdtemp()
    model = str(random_toyworld(Path(tempfile.mkdtemp())))
    env = os.environ | {"RUSHES_HOME": home}
    server = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--model", model, "--port", "7861",
                               "--device", "cpu"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_http(URL)
        client = Client(URL, verbose=False)
        run_id, _ = client.predict("contrast", None, None, args.tune_steps, 4, 1e-3, "load", api_name="/tune_start")
        deadline = time.time() + 300
        while time.time() < deadline:  # wait until the tune is really stepping
            status, *_ = client.predict(run_id, api_name="/tune_status")
            if "running" in status and "step 0/" not in status:
                break
            time.sleep(1)
        tune_before = status
        results: list[tuple[str, float]] = [("", 0.0)] * args.requests
        start = threading.Barrier(args.requests)

        def one(i: int) -> None:
            c = Client(URL, verbose=False)
            start.wait()
            t = time.perf_counter()
            try:
                c.predict(model, f"a red ball moving right {i}", "", "student 4 steps", i, 17, 64, "", 1.0, False,
                          api_name="/generate")
                results[i] = ("ok", time.perf_counter() - t)
            except Exception as err:  # the client raises with the server's message
                text = str(err).lower()
                kind = "queue full" if "queue" in text and "full" in text else f"error: {err}"
                results[i] = (kind, time.perf_counter() - t)

        began = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.requests)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - began
        t = time.perf_counter()
        info = client.predict(api_name="/system")
        responsive = time.perf_counter() - t
        status, *_ = client.predict(run_id, api_name="/tune_status")
        client.predict(run_id, api_name="/tune_cancel")
    finally:
        server.terminate()
        server.wait()
    ok = sorted(s for k, s in results if k == "ok")
    full = sum(k == "queue full" for k, _ in results)
    errors = [k for k, _ in results if k not in ("ok", "queue full")]

    def pct(q: float) -> float:
        return ok[min(len(ok) - 1, int(q * len(ok)))]

    print(f"| measure ({args.requests} concurrent generate requests, 4-step 17x64x64, while a tune runs) | value |")
    print("|---|---|")
    print(f"| succeeded | {len(ok)} |")
    print(f"| refused with 'queue full' | {full} |")
    print(f"| other errors | {len(errors)} {errors[:3] if errors else ''} |")
    if ok:
        print(f"| latency of successes p50 / p90 / max | {pct(0.5):.2f} / {pct(0.9):.2f} / {ok[-1]:.2f} s "
              f"(mean {statistics.mean(ok):.2f}) |")
    print(f"| wall time for the burst | {wall:.1f} s |")
    print(f"| tune status before -> after the burst | {tune_before.split(' · ')[1]} -> {status.split(' · ')[1]} |")
    print(f"| System tab answered right after the burst | {responsive:.2f} s ({info['device']}) |")


if __name__ == "__main__":
    main()
