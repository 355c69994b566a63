"""The DMD2 generator term as one step (Yin et al. 2024; DOLLAR §3.1), shared by distillation
and by reward tuning's "vsd" regulariser.

1. `fake_score_updates`: the fake score tracks the generator by flow matching on the detached
   generator sample (fresh level and noise per update; the two time-scale rule);
2. `vsd_term`: the sample re-noised at a random shifted level clamped to [min, max], the
   teacher's x0 with CFG ("real score") and the fake score's x0 under no_grad, then L_VSD
   (the pure function in engine/distill/vsd.py).
Random draws come from the caller's generator in a fixed order, so a resumed run repeats them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from engine.distill.flow_matching import flow_matching_loss, sample_levels
from engine.distill.gan import RealComparison
from engine.distill.vsd import vsd_loss
from engine.model import FlowModel, add_noise


def fake_score_updates(fake: FlowModel, x: torch.Tensor, text: torch.Tensor, shift: float, updates: int,
                       gen: torch.Generator, apply: Callable[[torch.Tensor], None],
                       amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                       gan: RealComparison | None = None) -> dict:
    """`updates` flow-matching steps of the fake score on x [B, C, T, h, w] (detached);
    `apply(loss)` backpropagates and steps its optimizer(s). With `gan`, each step also trains
    DMD2's discriminator: the real latents join the same pass at the same levels, and the loss
    adds weight * L_D. Returns {"fake_flow_loss": last} (and the last L_D logs)."""
    x, b = x.detach(), x.shape[0]
    logs, dlogs = {}, {}
    for _ in range(updates):
        sigma = sample_levels(b, shift, gen)
        eps = torch.randn(x.shape, generator=gen).to(x.device)
        x_t, levels, cond = add_noise(x, eps, sigma), sigma, text
        if gan:
            x_t, levels, cond = gan.with_real(x_t, sigma, text, gen)
        with amp(), (gan.tap if gan else contextlib.nullcontext()):
            v = fake.velocity(x_t, levels, cond)
            d_loss, dlogs = gan.loss(b) if gan else (0.0, {})
        loss, logs = flow_matching_loss(v[:b], x, eps)
        apply(loss + d_loss)
    return {"fake_" + k: v for k, v in logs.items()} | dlogs


def vsd_term(x: torch.Tensor, teacher: FlowModel, fake: FlowModel, text: torch.Tensor, uncond: torch.Tensor,
             guidance: float, shift: float, gen: torch.Generator, min_level: float = 0.02,
             max_level: float = 0.98, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """L_VSD of the generator sample x (carrying its gradient) at a random clamped level;
    `weights` [B]: each sample's weight (Re-DMD, vsd.reward_weights), None for equal ones."""
    level = sample_levels(x.shape[0], shift, gen).clamp(min_level, max_level)
    x_noisy = add_noise(x.detach(), torch.randn(x.shape, generator=gen).to(x.device), level)
    with torch.no_grad():
        x0_real = teacher.predict_x0(x_noisy, level, text, uncond, guidance)
        x0_fake = fake.predict_x0(x_noisy, level, text)
    return vsd_loss(x, x0_real, x0_fake, weights)
