"""Variational score distillation, DMD2's estimator (Yin et al. 2024, "Improved Distribution
Matching Distillation", eq. 2-3; DOLLAR, Ding et al. 2024, §3.1).

The generator sample x (x0 space) is re-noised to x_t; the teacher's x0 with CFG ("real
score") and the fake score's x0 give the distribution-matching direction

    grad = (x0_fake - x0_real) / mean_{C,T,H,W} |x - x0_real|      (per-sample normaliser)
    L_VSD = 0.5 * mean((x - sg(x - grad))^2)

so that dL/dx = grad / N (N = elements). The normaliser is per sample, as in DMD2's code
(FastVideo divides by the batch mean instead; we follow DMD2 and say so here). The x0
difference is taken in float64 to keep the small difference of two large predictions exact.
"""

from __future__ import annotations

import torch


def vsd_loss(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor,
             weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """x, x0_real, x0_fake: [B, C, T, h, w]; x carries the generator's gradient, the others none.
    `weights` [B] (mean 1) scale each sample's term: Reward Forcing's Re-DMD (see `reward_weights`);
    None weighs them equally.

    Returns (loss, logs) with logs {"vsd_loss", "vsd_grad_norm"}.
    """
    with torch.no_grad():
        real = x0_real.double()
        normaliser = (x.detach().double() - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)  # [B,1,1,1,1]
        grad = (x0_fake.double() - real) / normaliser.clamp_min(1e-8)
        grad = torch.nan_to_num(grad).to(x.dtype)
        target = x.detach() - grad
    if weights is None:
        loss = 0.5 * torch.nn.functional.mse_loss(x, target)
    else:
        per_sample = (x - target).pow(2).mean(dim=(1, 2, 3, 4))
        loss = 0.5 * (weights.detach().to(per_sample.dtype) * per_sample).mean()
    return loss, {"vsd_loss": loss.item(), "vsd_grad_norm": grad.norm().item() / max(1, grad.shape[0])}


def reward_weights(rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """Re-DMD's per-sample weights (Reward Forcing, 2025): B * softmax(beta * r) over the batch,
    so the distribution-matching gradient leans toward the samples the reward prefers while the
    weights keep mean 1; beta 0 gives every sample weight 1 (plain DMD)."""
    return rewards.numel() * torch.softmax(beta * rewards.detach().double(), dim=0).float()
