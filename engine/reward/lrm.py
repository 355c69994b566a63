"""The latent reward model (DOLLAR §3.3): predicts a pixel reward from clean latents.

Per latent frame a small 2D CNN (a 3x3 convolution, then two with stride 2, GroupNorm + SiLU)
reads the frame and, with `temporal`, its difference from the previous latent frame (motion and
flicker live in those differences). Its features are pooled over space by mean and standard
deviation (colourfulness and contrast are spreads, which a mean alone cannot express), at the
half- and quarter-resolution maps with `multiscale` (on toyworld's 8x8 latents the quarter map
is 2x2, too coarse alone), then over frames the same way, so how much a frame statistic changes
over time is visible too; an MLP head maps them to the reward. No timestep input. The
text-conditioned variant adds a text MLP and one attention step from the clip feature to the
token states, keeping an image residual (with one pooled key the attention alone would ignore
the image). With `members` > 1 the model is an ensemble of independently initialised members,
each fitted on its own, whose predictions are averaged: the generator then climbs the members'
consensus. Offline fidelity of each choice: bench/lrm.py (docs/experiments/reward-tuning.md).

Trained online by MSE to R(decode(x), prompt) where R runs under no_grad, so R need not be
differentiable; the generator's fine-tuning term is L_FT = -mean R_lrm(G(eps)), whose gradient
goes through the LRM only, never through the VAE decoder or R.
"""

from __future__ import annotations

import torch
from torch import nn


def _spread(x: torch.Tensor, dim) -> torch.Tensor:
    """Standard deviation with a floor inside the root (finite gradient at zero spread)."""
    return (x.var(dim=dim, unbiased=False) + 1e-6).sqrt()


class _Member(nn.Module):
    def __init__(self, latent_channels: int, width: int, text_dim: int | None, temporal: bool, multiscale: bool):
        super().__init__()
        self.temporal, self.multiscale = temporal, multiscale
        inputs = latent_channels * (2 if temporal else 1)
        self.fine = nn.Sequential(
            nn.Conv2d(inputs, width // 2, kernel_size=3, padding=1), nn.SiLU(),
            nn.Conv2d(width // 2, width, kernel_size=3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
        )
        self.coarse = nn.Sequential(
            nn.Conv2d(width, width, kernel_size=3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU())
        scales = 2 if multiscale else 1
        pooled = width * 2 * scales * (2 if temporal else 1)  # (space mean, std) x scales x (time mean[, std])
        self.proj = nn.Sequential(nn.Linear(pooled, width), nn.SiLU())
        self.text_dim = text_dim
        if text_dim:
            self.text_mlp = nn.Sequential(nn.Linear(text_dim, width), nn.SiLU(), nn.Linear(width, width))
            self.attn = nn.MultiheadAttention(width, num_heads=4, batch_first=True)
        self.head = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, latents: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        b, c, t, h, w = latents.shape
        z = latents.float()
        if self.temporal:
            z = torch.cat([z, torch.diff(z, dim=2, prepend=z[:, :, :1])], dim=1)  # [B, 2C, T, h, w]
        frames = z.permute(0, 2, 1, 3, 4).reshape(b * t, z.shape[1], h, w)  # frames as a batch
        fine = self.fine(frames)
        maps = [fine, self.coarse(fine)] if self.multiscale else [self.coarse(fine)]
        per_frame = torch.cat([s for m in maps for s in (m.mean(dim=(2, 3)), _spread(m, (2, 3)))], 1).view(b, t, -1)
        pooled = [per_frame.mean(1)] + ([_spread(per_frame, 1)] if self.temporal else [])
        feat = self.proj(torch.cat(pooled, 1))  # [B, width]
        if self.text_dim and text is not None:
            tokens = self.text_mlp(text.float())  # [B, L, width]
            attended, _ = self.attn(feat[:, None], tokens, tokens)
            feat = feat + attended[:, 0]  # image residual keeps the image in the answer
        return self.head(feat)[:, 0]


class LatentRewardModel(nn.Module):
    def __init__(self, latent_channels: int, width: int = 128, text_dim: int | None = None,
                 temporal: bool = True, members: int = 1, multiscale: bool = True):
        super().__init__()
        if members < 1 or width % 16:
            raise ValueError(f"LRM needs members >= 1 and a width divisible by 16, got {members} and {width}")
        self.members = nn.ModuleList(_Member(latent_channels, width, text_dim, temporal, multiscale) for _ in range(members))

    def forward(self, latents: torch.Tensor, text: torch.Tensor | None = None, each: bool = False) -> torch.Tensor:
        """latents [B, C, T, h, w] (normalised), text states [B, L, D] -> reward [B], the members'
        mean; with `each`, every member's prediction [M, B] (fit each member on its own, so the
        ensemble's members stay independent estimators)."""
        out = torch.stack([m(latents, text) for m in self.members])
        return out if each else out.mean(0)


def lrm_fit_loss(predicted: torch.Tensor, reward: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """MSE between the LRM's prediction [B] (or every member's, [M, B]) and the pixel reward [B]
    (no gradient in reward); for members, the mean of their MSEs."""
    loss = torch.mean((predicted.float() - reward.detach().float()) ** 2)
    return loss, {"lrm_fit_loss": loss.item()}


def reward_loss(predicted: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """L_FT = -mean R_lrm(x) over the batch [B]; gradients flow into x through the LRM."""
    loss = -predicted.float().mean()
    return loss, {"ft_loss": loss.item(), "lrm_reward": -loss.item()}
