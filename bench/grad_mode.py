"""Why the engine samples under no_grad in every thread: a 4-step toyworld clip's denoise time
in the main thread and in a worker thread (as the studio's Gradio handlers run), through the
engine, beside the same sampler driven with grad mode on (what a worker thread gets by
default, and what the studio did before the fix), side by side in one run.

    python bench/grad_mode.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch


from engine import schedule
from engine.events import Result
from engine.generate import Engine
from engine.requests import GenerateRequest
from engine.sampling import noise_like, run_to_end, student_sample

PROMPT = "a red ball moving right on a black background"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    engine = Engine()
    loaded = engine.model("toyworld")
    flow, timesteps = loaded.student(4)
    sigmas = schedule.student_sigmas(timesteps, loaded.info.shift)
    text = loaded.text.encode([PROMPT])

    def through_engine() -> float:
        event = list(engine.generate(GenerateRequest(prompt=PROMPT, role="student", steps=4, seed=0)))[-1]
        assert isinstance(event, Result)
        return event.value.meta["timings"]["denoise_s"]

    def grad_on() -> float:
        with torch.enable_grad():
            generator = torch.Generator().manual_seed(0)
            noise = noise_like((1, *loaded.codec.latent_shape(17, 64, 64)), generator, "cpu")
            began = time.perf_counter()
            run_to_end(student_sample(flow, noise, sigmas, text, generator))
            return time.perf_counter() - began

    worker = ThreadPoolExecutor(1)
    through_engine(), worker.submit(through_engine).result(), worker.submit(grad_on).result()  # warm up
    rows = {"engine, main thread": lambda: through_engine(),
            "engine, worker thread": lambda: worker.submit(through_engine).result(),
            "grad mode on, worker thread (before the fix)": lambda: worker.submit(grad_on).result()}
    times = {name: [] for name in rows}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits every row alike
        for name, run in rows.items():
            times[name].append(run())
    base = statistics.median(times["engine, main thread"])
    print(f"toyworld 4-step student, 17x64x64, denoise only; median of {args.repeats}, torch threads "
          f"{torch.get_num_threads()}\n")
    print("| how | denoise s | vs engine in the main thread |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.4f} | {statistics.median(values) / base:.2f}x |")


if __name__ == "__main__":
    main()
