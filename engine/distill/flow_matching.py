"""Flow-matching loss (rectified flow, Wan convention), used by the teacher and the fake score.

`x_t = (1 - s) x0 + s eps`, target velocity `v = eps - x0` (Lipman et al. 2023; Esser et al.
2024, SD3). Training levels: `u = sigmoid(n)`, n ~ N(0, 1) (SD3's logit-normal), then warped by
the shift k: `s = k u / (1 + (k - 1) u)`, clamped to [1e-3, 1].
"""

from __future__ import annotations

import torch

from engine.schedule import shift_sigma


def sample_levels(batch: int, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise levels s [batch] (float32) from the shifted logit-normal."""
    u = torch.sigmoid(torch.randn(batch, generator=generator))
    return shift_sigma(u, shift).float().clamp(1e-3, 1.0)


def flow_matching_loss(v_pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """mean over all elements of (v_pred - (eps - x0))^2.

    Shapes: v_pred, x0, eps [B, C, T, h, w]. x0 and eps carry no gradient here (the caller
    passes data and noise; for the fake score, x0 is the detached generator sample).
    Returns (loss, logs) with logs {"flow_loss": float}.
    """
    target = (eps - x0).float()
    loss = torch.mean((v_pred.float() - target) ** 2)
    return loss, {"flow_loss": loss.item()}
