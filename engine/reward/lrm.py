"""The latent reward model (DOLLAR §3.3): predicts a pixel reward from clean latents.

Per latent frame a small 2D CNN (Conv k4 s4 -> 128, Conv k3 s2, GroupNorm + SiLU, global
average pool, 1x1 conv, linear), averaged over latent frames; no timestep input. The
text-conditioned variant adds a text MLP and one attention step from the image feature to
the token states, keeping an image residual (with one pooled key the attention alone would
ignore the image). Trained online by MSE to R(decode(x), prompt) where R runs under no_grad,
so R need not be differentiable; the generator's fine-tuning term is L_FT = -mean R_lrm(G(eps)),
whose gradient goes through the LRM only, never through the VAE decoder or R.
"""

from __future__ import annotations

import torch
from torch import nn


class LatentRewardModel(nn.Module):
    def __init__(self, latent_channels: int, width: int = 128, text_dim: int | None = None):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(latent_channels, width, kernel_size=4, stride=4),
            nn.Conv2d(width, width, kernel_size=3, stride=2, padding=1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
        )
        self.mix = nn.Conv2d(width, width, kernel_size=1)
        self.text_dim = text_dim
        if text_dim:
            self.text_mlp = nn.Sequential(nn.Linear(text_dim, width), nn.SiLU(), nn.Linear(width, width))
            self.attn = nn.MultiheadAttention(width, num_heads=4, batch_first=True)
        self.head = nn.Linear(width, 1)

    def forward(self, latents: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """latents [B, C, T, h, w] (normalised), text states [B, L, D] -> reward [B]."""
        b, c, t, h, w = latents.shape
        frames = latents.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # frames as a batch
        feat = self.conv(frames.float())
        feat = self.mix(feat).mean(dim=(2, 3))  # [B*T, width], global average pool
        feat = feat.view(b, t, -1).mean(1)  # [B, width], average over latent frames
        if self.text_dim and text is not None:
            tokens = self.text_mlp(text.float())  # [B, L, width]
            attended, _ = self.attn(feat[:, None], tokens, tokens)
            feat = feat + attended[:, 0]  # image residual keeps the image in the answer
        return self.head(feat)[:, 0]


def lrm_fit_loss(predicted: torch.Tensor, reward: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """MSE between the LRM's prediction [B] and the pixel reward [B] (no gradient in reward)."""
    loss = torch.mean((predicted.float() - reward.detach().float()) ** 2)
    return loss, {"lrm_fit_loss": loss.item()}


def reward_loss(predicted: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """L_FT = -mean R_lrm(x) over the batch [B]; gradients flow into x through the LRM."""
    loss = -predicted.float().mean()
    return loss, {"ft_loss": loss.item(), "lrm_reward": -loss.item()}
