"""Does classifier-free guidance on a distilled student help? MiniBench rows for the student
sampled with CFG, v_u + g (v_c - v_u) (the same on x0 at one x_t), at chosen steps only (an
extra pass under the empty caption at each of them).

    python bench/student_guidance.py --steps 4 --configs 1: 1.5:2,3 2.0:0,1,2,3 [--prompts 32 --seeds 2]

Each config is G:STEPS, STEPS the 0-based step indices that get guidance ("1:" is the student as
shipped); the first config is the one the others are paired against. The loaded student is
wrapped in this process only; the sampler is the engine's.
"""

from __future__ import annotations

import argparse

import torch


from engine import schedule
from engine.generate import Engine
from engine.model import FlowModel
from engine.toyworld import minibench


class GuidedStudent(FlowModel):
    """A student network that predicts with CFG (the empty caption as `uncond`) at the listed noise levels."""

    def __init__(self, flow: FlowModel, uncond: torch.Tensor, guidance: float, levels: set[float]):
        super().__init__(flow.transformer, flow.codec)
        self.uncond, self.guidance, self.levels = uncond, guidance, {round(s, 6) for s in levels}

    def predict_x0(self, x_t, sigma, text, uncond=None, guidance: float = 1.0):
        if round(float(sigma[0]), 6) in self.levels:
            return super().predict_x0(x_t, sigma, text, self.uncond.to(x_t.device), self.guidance)
        return super().predict_x0(x_t, sigma, text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--configs", nargs="+", default=["1:", "1.5:2,3"])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--splits", default="public-eval,public-heldout")
    args = ap.parse_args()
    engine = Engine()
    loaded = engine.model(args.model)
    plain, timesteps = loaded.student(args.steps)
    sigmas = schedule.student_sigmas(timesteps, loaded.info.shift).tolist()
    uncond = loaded.text.encode([""])
    source = minibench.model_source(engine, args.model, "student", args.steps)
    print(minibench.TABLE_HEADER.format(label="guidance:steps"))
    reports = {}
    for config in args.configs:
        g, _, at = config.partition(":")
        levels = {sigmas[int(i)] for i in at.split(",") if i}
        loaded.students[args.steps] = (GuidedStudent(plain, uncond, float(g), levels), timesteps)
        for split in args.splits.split(","):
            r = reports[config, split] = minibench.evaluate(source, split, prompts=args.prompts, seeds=args.seeds)
            print(minibench.table_row(config, r), flush=True)
    print(f"\nAgainst {args.configs[0]} (paired SE)\n\n" + minibench.DIFFERENCE_HEADER.format(label="guidance:steps"))
    for config, split in reports:
        if config != args.configs[0]:
            print(minibench.difference_row(config, reports[config, split], reports[args.configs[0], split]))


if __name__ == "__main__":
    main()
