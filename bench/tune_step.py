"""Where a latent-reward tune step spends its time, for two ways of decoding the batch, side by side.

Times `Tuner.update` and its parts (backward simulation, the student's forward passes, the VAE
decode of the batch, the backward pass) over `--steps` updates after `--warmup`, once with the
decode a tune used before 99c9f94 (fp32, one VAE call for all frames) and once as tunes decode
now (`engine.tune.run.load_for_tune`: the studio's decode dtype, FRAME_CHUNK-frame calls).
Parts nest (the forward passes include those of the backward simulation), so they do not sum.
With --targets, compares LoRA target-module sets instead (both decoding as tunes do now).

    python bench/tune_step.py [--reward brightness] [--steps 40] [--warmup 5]
    python bench/tune_step.py --targets "default=to_q,to_k,to_v,to_out.0" "self-attn+ffn=attn1.to_q,...,ffn.net.2"
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import torch


from engine import loading
from engine.toyworld.data import ToyworldData
from engine.tune import trainer
from engine.tune.config import TuneConfig
from engine.tune.run import load_for_tune


def profile(loaded, reward: str, steps: int, warmup: int, **knobs) -> tuple[float, dict]:
    """(ms per update, {part: ms per update}) of a fresh tune on `loaded`."""
    spent = collections.defaultdict(float)

    def timed(label, fn):
        def run(*args, **kwargs):
            began = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[label] += time.perf_counter() - began
            return out
        return run

    tuner = trainer.Tuner(TuneConfig(reward=reward, steps=steps + warmup, **knobs), loaded, Path(tempfile.mkdtemp()),
                          ToyworldData().prompts("train"))
    patches = [(trainer, "backward_simulation"), (tuner.flow, "predict_x0"), (loaded.codec, "decode")]
    saved = [(obj, name, getattr(obj, name)) for obj, name in patches]
    labels = {"backward_simulation": "backward simulation", "predict_x0": "student forward passes",
              "decode": "VAE decode of the batch"}
    for obj, name, fn in saved:
        setattr(obj, name, timed(labels[name], fn))
    backward = torch.Tensor.backward
    torch.Tensor.backward = timed("backward passes", backward)
    try:
        for _ in range(warmup):
            tuner.update()
        spent.clear()
        began = time.perf_counter()
        for _ in range(steps):
            tuner.update()
        total = time.perf_counter() - began
    finally:
        torch.Tensor.backward = backward
        for obj, name, fn in saved:
            setattr(obj, name, fn)
    return total / steps * 1000, {k: v / steps * 1000 for k, v in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--reward", default="brightness")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--targets", nargs=2, default=None, metavar="LABEL=MODULES",
                    help="compare two TuneConfig.target_modules sets (comma-separated) instead of two decodes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.targets:
        loaded = load_for_tune(args.model)
        cases = [(label, loaded, {"target_modules": mods.split(",")})
                 for label, mods in (t.split("=", 1) for t in args.targets)]
    else:
        old = loading.load(args.model)  # fp32 decode as loaded
        old.codec.frame_chunk = 10**6  # every frame of the batch in one VAE call
        cases = [("fp32, one VAE call (before 99c9f94)", old, {}), ("load_for_tune (now)", load_for_tune(args.model), {})]
    rows = [(name, *profile(loaded, args.reward, args.steps, args.warmup, **knobs)) for name, loaded, knobs in cases]
    parts = list(rows[0][2])
    print(f"reward {args.reward}; {args.steps} updates after {args.warmup}; torch threads {args.threads}; ms per update\n")
    print(f"| {'LoRA targets' if args.targets else 'decode'} | update | " + " | ".join(parts) + " | 300 updates (s) |")
    print("|---|---|" + "---|" * len(parts) + "---|")
    for name, total, spent in rows:
        print(f"| {name} | {total:.0f} | " + " | ".join(f"{spent.get(p, 0):.0f}" for p in parts) +
              f" | {total * 0.3:.0f} |")
    print(f"\nupdate time {rows[1][0]} / {rows[0][0]}: {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
