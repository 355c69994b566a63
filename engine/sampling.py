"""Samplers: the student's fixed step list and the teacher's many-step ODE with CFG.

Student (DMD2 / Self-Forcing): at each listed level predict x0, then re-noise it with fresh
noise to the next listed level; the last x0 is the sample. Teacher: flow-matching Euler
(`x <- x + (s_next - s) v`) or UniPC (diffusers' scheduler with flow sigmas), with classifier-
free guidance `v_u + w (v_c - v_u)`. Both
draw all noise from the passed CPU generator, so the same seed gives the same clip anywhere.

Samplers are generators: they yield `(step_index, x0_estimate)` after each step (so callers
can report progress, preview and cancel between steps) and return the final latents;
`run_to_end` drives one to completion for code that wants only the result.
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from engine.knobs import check_share
from engine.model import FlowModel, add_noise

Steps = Generator[tuple[int, torch.Tensor], None, torch.Tensor]


def run_to_end(steps: Steps) -> torch.Tensor:
    """Exhaust a sampler generator and return its final latents."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def noise_like(shape: tuple[int, ...], generator: torch.Generator, device) -> torch.Tensor:
    """Gaussian noise drawn on the CPU (device-independent for a seed), moved to `device`."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def frame_shared_noise(noise: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Noise [B, C, T, h, w] whose frames hold a common part: `sqrt(share) z + sqrt(1 - share) noise`
    with z [B, C, 1, h, w] drawn from `generator` after `noise` (unit variance per element, the
    frames correlated by `share`; PYoCo's mixed noise, Ge et al. 2023). A one-step generator
    G(z) may take any input distribution (VSD matches only its outputs), and from frame-shared
    noise it lays one layout out over all frames instead of reconciling 17 independent draws
    (on toyworld: alone, more diverse 1-step clips and no semantic gain; with DMD2's GAN term, the
    shipped 1-step student; docs/experiments/one-step-student.md, "Frame-shared starting noise"). share 0 returns
    `noise` itself and draws nothing."""
    if check_share("noise frame share", share) == 0.0:
        return noise
    common = noise_like((*noise.shape[:2], 1, *noise.shape[3:]), generator, noise.device)
    return share ** 0.5 * common + (1 - share) ** 0.5 * noise


def student_sample(model: FlowModel, noise: torch.Tensor, sigmas: torch.Tensor, text: torch.Tensor,
                   generator: torch.Generator) -> Steps:
    """Few-step sampling on a fixed list of noise levels; returns x0 [B, C, T, h, w]."""
    b = noise.shape[0]
    x = add_noise(torch.zeros_like(noise), noise, float(sigmas[0]))  # pure noise when s0 = 1
    x0 = x
    for i, s in enumerate(sigmas.tolist()):
        x0 = model.predict_x0(x, torch.full((b,), s, device=x.device), text)
        yield i, x0
        if i + 1 < len(sigmas):
            eps = noise_like(tuple(x0.shape), generator, x0.device)
            x = add_noise(x0, eps, float(sigmas[i + 1]))
    return x0


@torch.no_grad()
def backward_simulation(model: FlowModel, noise: torch.Tensor, sigmas: list[float], k: int, text: torch.Tensor,
                        generator: torch.Generator) -> torch.Tensor:
    """x_t at the listed level sigmas[k]: k student steps from `noise` (at sigmas[0]), each
    predicting x0 and re-noising it to the next level with fresh noise (DMD2's backward
    simulation of the generator's inputs; no gradient)."""
    b, x_t = noise.shape[0], noise
    for i in range(k):
        x0 = model.predict_x0(x_t, torch.full((b,), sigmas[i], device=x_t.device), text)
        x_t = add_noise(x0, noise_like(tuple(x0.shape), generator, x0.device), sigmas[i + 1])
    return x_t


def teacher_sample(model: FlowModel, noise: torch.Tensor, sigmas: torch.Tensor, text: torch.Tensor,
                   uncond: torch.Tensor | None, guidance: float, solver: str = "euler",
                   shift: float = 1.0, guidance_levels: tuple[float, float] = (0.0, 1.0)) -> Steps:
    """Many-step ODE from s = sigmas[0] to 0; `sigmas` holds steps + 1 levels ending at 0.

    CFG applies at levels inside `guidance_levels` (lo, hi); outside it the conditional
    velocity alone is used, one network pass per step (guidance in a limited interval,
    Kynkaanniemi et al. 2024). UniPC builds its own (shifted) schedule from the step count
    and `shift`.
    """
    lo, hi = guidance_levels
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"guidance_levels must satisfy 0 <= lo <= hi <= 1, got {guidance_levels}")

    def scale(s: float) -> float:
        return guidance if lo <= s <= hi else 1.0

    if solver == "unipc":
        return (yield from _unipc(model, noise, len(sigmas) - 1, shift, text, uncond, scale))
    if solver != "euler":
        raise ValueError(f"solver must be 'euler' or 'unipc', got {solver!r}")
    b = noise.shape[0]
    x = noise
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        sigma = torch.full((b,), s, device=x.device)
        v = model.guided_velocity(x, sigma, text, uncond, scale(s))
        yield i, x - s * v
        x = x + (s_next - s) * v
    return x


def _unipc(model, noise, steps, shift, text, uncond, scale) -> Steps:
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=shift)
    scheduler.set_timesteps(steps, device=noise.device)
    b = noise.shape[0]
    x = noise
    for i, t in enumerate(scheduler.timesteps):
        s = float(scheduler.sigmas[i])
        v = model.guided_velocity(x, torch.full((b,), s, device=x.device), text, uncond, scale(s))
        yield i, x - s * v
        x = scheduler.step(v, t, x, return_dict=False)[0]
    return x
