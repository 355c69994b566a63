"""Which thread the engine computes on, and what it costs: 4-step toyworld clips made
- in the main thread (the CLI);
- from a pool of handler threads taking turns, after the main thread loaded the model (how the
  studio ran before `RuntimeOptions.own_thread`: Gradio calls each handler on a pool thread);
- from the same pool of threads through an engine with `own_thread=True` (the studio now).

    python bench/threads.py [--clips 12]

Each case runs in a fresh process (an OpenMP team, once made, lives as long as its thread).
Prints the median denoise and engine times and their ratios to the main-thread case.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = ("main thread", "handler threads", "handler threads, own_thread engine")


class Pool:
    """Long-lived threads that take turns, like a server's handler pool."""

    def __init__(self, size: int = 4):
        self.inboxes = [queue.SimpleQueue() for _ in range(size)]
        self.turn = 0
        for inbox in self.inboxes:
            threading.Thread(target=self._serve, args=(inbox,), daemon=True).start()

    @staticmethod
    def _serve(inbox):
        while True:
            fn, out = inbox.get()
            out.put(fn())

    def call(self, fn):
        out = queue.SimpleQueue()
        self.inboxes[self.turn % len(self.inboxes)].put((fn, out))
        self.turn += 1
        return out.get()


def run_case(case: str, clips: int) -> dict:
    from engine.events import Result
    from engine.generate import Engine
    from engine.requests import GenerateRequest
    from engine.runtime import RuntimeOptions

    engine = Engine(RuntimeOptions(own_thread=case == CASES[2]))
    engine.model("toyworld")  # loads in the main thread, or on the engine's own thread
    pool = None if case == CASES[0] else Pool()

    def one(i: int) -> dict:
        req = GenerateRequest(prompt=f"a red ball moving right {i}", model="toyworld", role="student",
                              steps=4, seed=i)
        return [e for e in engine.generate(req) if isinstance(e, Result)][-1].value.meta["timings"]

    times = [one(i) if pool is None else pool.call(lambda i=i: one(i)) for i in range(clips + 2)][2:]
    return {k: statistics.median(t[k] for t in times) for k in ("denoise_s", "total_s")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.clips)))
        return
    results = {}
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", case, "--clips", str(args.clips)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        results[case] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results[CASES[0]]
    print("| where the engine computes | denoise s | vs main | engine total s | vs main |\n|---|---|---|---|---|")
    for case, r in results.items():
        print(f"| {case} | {r['denoise_s']:.4f} | {r['denoise_s'] / base['denoise_s']:.2f}x | "
              f"{r['total_s']:.4f} | {r['total_s'] / base['total_s']:.2f}x |")


if __name__ == "__main__":
    main()
