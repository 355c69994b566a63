"""Noise levels for flow matching (Wan convention) and the students' fixed step lists.

`x_t = (1 - s) x0 + s eps` with s in [0, 1]; the network sees timestep `1000 s`.
Shift warps a level toward the noisy end: `s' = k s / (1 + (k - 1) s)` (SD3 / Wan).
"""

from __future__ import annotations

import math

import torch

STUDENT_STEP_LISTS = {1: [1000], 2: [1000, 500], 3: [1000, 757, 522], 4: [1000, 750, 500, 250]}


def shift_sigma(sigma: torch.Tensor | float, shift: float) -> torch.Tensor:
    """Warp noise levels by the shift k: s' = k s / (1 + (k - 1) s)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return shift * sigma / (1 + (shift - 1) * sigma)


def student_sigmas(timesteps: list[int], shift: float = 1.0, warp: bool = True) -> torch.Tensor:
    """Noise levels for a student's listed timesteps (0..1000), optionally warped by the shift."""
    bad = [t for t in timesteps if not 0 < t <= 1000]
    if bad or not timesteps:
        raise ValueError(f"student timesteps must be in (0, 1000], got {timesteps}")
    sigma = torch.tensor(timesteps, dtype=torch.float64) / 1000
    return shift_sigma(sigma, shift) if warp else sigma


def default_student_timesteps(steps: int) -> list[int]:
    """The DMD2-style evenly spaced list for `steps` steps, e.g. 4 -> [1000, 750, 500, 250]."""
    if steps in STUDENT_STEP_LISTS:
        return list(STUDENT_STEP_LISTS[steps])
    return [round(1000 * (steps - i) / steps) for i in range(steps)]


def teacher_sigmas(steps: int, shift: float) -> torch.Tensor:
    """`steps + 1` decreasing levels from 1 to 0, uniform then shifted (Wan's Euler schedule)."""
    base = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return shift_sigma(base, shift)


def warmup_cosine(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Learning rate: linear warm-up to `peak` over `warmup` steps, then cosine decay to `floor`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))
