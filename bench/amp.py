"""bf16 autocast against float32 for one toyworld teacher training step, on this machine.

    python bench/amp.py [--steps 3] [--batch 8]

Random weights of the toyworld teacher's architecture, a batch of random latents and caption
states; forward under autocast (or not), backward, AdamW step. Prints whether the CPU runs bf16
natively (oneDNN), the median step time of each and their ratio: what `runtime.bf16_autocast`
decides from the flag alone.
"""

from __future__ import annotations

import argparse
import statistics
import time


import torch

from engine.distill.flow_matching import flow_matching_loss
from engine.model import FlowModel, add_noise
from engine.runtime import native_bf16
from engine.toyworld.teacher_bake import make_teacher


def step_times(bf16: bool, steps: int, batch: int) -> list[float]:
    torch.manual_seed(0)
    model = make_teacher(3)
    flow = FlowModel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0, eps = torch.randn(batch, 16, 17, 8, 8), torch.randn(batch, 16, 17, 8, 8)
    sigma, text = torch.rand(batch), torch.randn(batch, 32, 384)
    times = []
    for _ in range(steps + 1):  # the first is a warm-up
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            v = flow.velocity(add_noise(x0, eps, sigma), sigma, text)
        loss, _ = flow_matching_loss(v, x0, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - began)
    return times[1:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, native bf16 on this CPU: {native_bf16('cpu')}")
    fp32 = statistics.median(step_times(False, args.steps, args.batch))
    bf16 = statistics.median(step_times(True, args.steps, args.batch))
    print(f"\n| teacher step, batch {args.batch} | median s | vs float32 |\n|---|---|---|")
    print(f"| float32 | {fp32:.3f} | 1.00x |")
    print(f"| bf16 autocast | {bf16:.3f} | {bf16 / fp32:.2f}x |")


if __name__ == "__main__":
    main()
