"""Differentiable pixel rewards: functions of decoded pixels that a gradient can climb directly.

The latent reward model (engine/reward/lrm.py) is DOLLAR's way to a reward gradient without
decoding. On toyworld it cannot learn what the prompt asks for at a distillation's budget: fitted
on 1200 student samples, its Pearson r on held-out clips is about 0 for each of the judge's
graded aspects (colour, shape, motion, count; docs/experiments/soups-and-pixel-reward.md, "what the LRM can learn, and a
differentiable colour reward").
A reward written in torch on the decoded clip needs no fit; its gradient goes through the VAE
decoder instead (the DRaFT / ReFL route, at about four times the LRM step's memory: "Memory:
latent-reward step vs pixel-reward step").

A pixel reward is `(pixels [B, 3, T, H, W] in [-1, 1], captions) -> [B]`, differentiable in
pixels; model-family plug-ins register theirs in PIXEL_REWARDS (toyworld's colour and count
readings: engine/toyworld/pixel_rewards.py).
"""

from __future__ import annotations

import torch

from engine import plugins


def pixel_reward_loss(rewards: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """L_px = -mean R_px(decode(x)) over the batch [B] (DRaFT's objective, Clark et al. 2024, at
    the generator's x0); gradients flow into x through R_px and the decoder."""
    loss = -rewards.float().mean()
    return loss, {"px_loss": loss.item(), "px_reward": -loss.item()}


# by name; model-family plug-ins add their own (engine/plugins.py: toyworld's colour and count)
PIXEL_REWARDS: dict = {}


def get(name: str):
    plugins.load()
    if name not in PIXEL_REWARDS:
        raise ValueError(f"unknown differentiable pixel reward {name!r}; there are: {', '.join(sorted(PIXEL_REWARDS))}")
    return PIXEL_REWARDS[name]
