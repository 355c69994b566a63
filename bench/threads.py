"""Which thread the engine computes on, and what it costs: 4-step toyworld clips made
- in the main thread (the CLI);
- from a pool of handler threads taking turns, after the main thread loaded the model (how an
  in-process engine behind Gradio runs: Gradio calls each handler on a pool thread);
- from the same pool of threads through a worker-process engine (`engine.worker.EngineProcess`,
  the studio now), which computes on its own main thread.

    python bench/threads.py [--clips 12]

Each case runs in a fresh process (an OpenMP team, once made, lives as long as its thread).
Prints the median denoise and engine times and their ratios to the main-thread case.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading

import harness  # bench/harness.py: measure in a fresh process

CASES = ("main thread", "handler threads", "handler threads, worker-process engine")


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
    from engine.worker import EngineProcess

    if case == CASES[2]:
        engine = EngineProcess(RuntimeOptions())
        engine.preload("toyworld").result()  # loads in the worker process, on its main thread
    else:
        engine = Engine(RuntimeOptions())
        engine.model("toyworld")  # loads in the main thread
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
    harness.add_child_argument(ap)
    args = ap.parse_args()
    case = harness.child_case(args)
    if case:
        harness.report(run_case(case["case"], case["clips"]))
        return
    results = {case: harness.in_child(__file__, {"case": case, "clips": args.clips}) for case in CASES}
    base = results[CASES[0]]
    print("| where the engine computes | denoise s | vs main | engine total s | vs main |\n|---|---|---|---|---|")
    for case, r in results.items():
        print(f"| {case} | {r['denoise_s']:.4f} | {r['denoise_s'] / base['denoise_s']:.2f}x | "
              f"{r['total_s']:.4f} | {r['total_s'] / base['total_s']:.2f}x |")


if __name__ == "__main__":
    main()
