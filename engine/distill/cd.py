"""Consistency distillation on forward-diffused real latents (LCM, Luo et al. 2023, eq. 6-9;
DOLLAR §3.2), flow-matching form.

A level s_{n+m} on the teacher's grid is reached by noising real x0; the frozen teacher runs m
Euler steps with CFG to s_n (`teacher_segment`); the student's consistency function at
s_{n+m} is pulled toward the EMA target's at s_n:

    f(x, s) = c_skip(s) x + c_out(s) x0_pred(x, s)
    c_skip(s) = sd^2 / ((10 * 1000 s)^2 + sd^2),  c_out(s) = 10 * 1000 s / sqrt((10 * 1000 s)^2 + sd^2)

(LCM's boundary condition with sigma_data sd = 0.5 and timestep scaling 10: f(x, 0) = x), and
L_CD = d(f_theta(x_{n+m}, s_{n+m}), sg(f_ema(xhat_n, s_n))), d = pseudo-Huber or MSE.
"""

from __future__ import annotations

import torch

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def boundary(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) for noise levels sigma [B]; c_skip(0) = 1, c_out(0) = 0."""
    scaled = TIMESTEP_SCALING * 1000 * sigma.double()
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2).sqrt()
    return c_skip.float(), c_out.float()


def consistency_fn(x_t: torch.Tensor, x0_pred: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """f = c_skip x_t + c_out x0_pred, sigma [B] broadcast over C, T, h, w."""
    c_skip, c_out = boundary(sigma)
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    return c_skip.view(shape) * x_t + c_out.view(shape) * x0_pred


def cd_loss(f_student: torch.Tensor, f_target: torch.Tensor, kind: str = "huber",
            huber_c: float = 0.001) -> tuple[torch.Tensor, dict]:
    """d(f_student, sg(f_target)); pseudo-Huber sqrt(||a - b||^2 / n + c^2) - c per sample, or MSE.

    Shapes [B, C, T, h, w]; the target carries no gradient.
    """
    diff = (f_student.float() - f_target.detach().float()).flatten(1)
    if kind == "huber":
        loss = (torch.sqrt(diff.pow(2).mean(1) + huber_c**2) - huber_c).mean()
    elif kind == "mse":
        loss = diff.pow(2).mean()
    else:
        raise ValueError(f"cd loss must be 'huber' or 'mse', got {kind!r}")
    return loss, {"cd_loss": loss.item()}


@torch.no_grad()
def teacher_segment(teacher, x: torch.Tensor, sigmas: list[float], text: torch.Tensor,
                    uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """m Euler steps of the teacher's guided ODE along `sigmas` (m + 1 decreasing levels)."""
    b = x.shape[0]
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        level = torch.full((b,), s, device=x.device)
        v = teacher.guided_velocity(x, level, text, uncond, guidance)
        x = x + (s_next - s) * v
    return x
