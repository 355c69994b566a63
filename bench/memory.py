"""Peak memory of one latent-reward step vs one pixel-reward step (DOLLAR §3.3), same batch.

Both steps run the student with gradients on a batch of noised latents; then
- latent reward: R_lrm(x), backward through the small LRM into the student;
- pixel reward: decode(x) with the VAE decoder (gradients on), a differentiable pixel reward
  (colourfulness in torch), backward through the decoder into the student.
Each variant runs in its own process on toyworld's architecture (random weights: memory does
not depend on them); peak = max RSS during the step minus max RSS after a no-grad warm-up.

    python bench/memory.py [--batch 4]
"""

from __future__ import annotations

import argparse
import resource

import harness  # bench/harness.py: measure in a fresh process


def peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_variant(variant: str, batch: int) -> dict:
    import torch

    from engine.codec import VideoCodec
    from engine.model import FlowModel
    from engine.reward.lrm import LatentRewardModel
    from engine.toyworld.teacher_bake import make_teacher
    from engine.toyworld.vae_bake import make_vae

    torch.manual_seed(0)
    student, codec = make_teacher(), VideoCodec(make_vae())
    flow, lrm = FlowModel(student, codec), LatentRewardModel(16, 128, 384)
    x_t = torch.randn(batch, 16, 17, 8, 8)
    sigma, text = torch.full((batch,), 0.7), torch.randn(batch, 32, 384)
    with torch.no_grad():  # warm-up: the same forward passes without gradients
        x = flow.predict_x0(x_t, sigma, text)
        lrm(x, text) if variant == "latent" else codec.decode_float(x)
    base = peak_kb()
    x = flow.predict_x0(x_t, sigma, text)
    if variant == "latent":
        loss = -lrm(x, text).mean()
    else:
        pixels = (codec.decode_float(x) + 1) * 127.5  # [B, 3, T, H, W], gradients on
        rg, yb = pixels[:, 0] - pixels[:, 1], 0.5 * (pixels[:, 0] + pixels[:, 1]) - pixels[:, 2]
        loss = -(torch.sqrt(rg.var() + yb.var()) + 0.3 * torch.sqrt(rg.mean() ** 2 + yb.mean() ** 2))
    loss.backward()
    return {"variant": variant, "step_peak_mb": (peak_kb() - base) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    harness.add_child_argument(ap)
    args = ap.parse_args()
    case = harness.child_case(args)
    if case:
        harness.report(run_variant(case["variant"], case["batch"]))
        return
    results = {variant: harness.in_child(__file__, {"variant": variant, "batch": args.batch})["step_peak_mb"]
               for variant in ("latent", "pixel")}
    print(f"toyworld architecture (random weights), batch {args.batch} x 17x64x64, CPU, one process per variant\n")
    print("| step | extra peak memory (MB) | vs pixel-reward step |\n|---|---|---|")
    for variant, label in (("latent", "latent reward (LRM)"), ("pixel", "pixel reward through the VAE decoder")):
        print(f"| {label} | {results[variant]:.1f} | {results[variant] / results['pixel']:.3f}x |")


if __name__ == "__main__":
    main()
