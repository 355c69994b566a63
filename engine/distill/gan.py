"""DMD2's GAN term (Yin et al. 2024, "Improved Distribution Matching Distillation", §4.3,
surpassing the teacher with a GAN loss and real data): a discriminator head on the fake score
network's features tells noised real latents from noised generator samples, so the generator is
also pulled toward the real data and not only toward the teacher's scores.

    L_D = E_real softplus(-D(F(x_real,t, t))) + E_fake softplus(D(F(sg(G(z)),t, t)))   (fake score + head)
    L_G = E_fake softplus(-D(F(G(z),t, t)))                                              (generator)

(the non-saturating form, Goodfellow et al. 2014; softplus(-d) = -log sigmoid(d)). D reads the
last transformer block's token states through a small per-token head (a patch discriminator:
one logit per token, averaged in the loss). DMD2 weights L_G by 5e-3 and L_D by 1e-2 on SDXL
(`w_gan`, `w_gan_d`); the knob is off by default.

With `gan_mismatch`, D is matching-aware (Reed et al. 2016, "Generative Adversarial Text to Image
Synthesis", GAN-CLS): each real clip also appears under another clip's caption, and those rows
count as fake, so D must read whether a clip fits its caption and not only whether it looks real:

    L_D = E_real softplus(-D(x_real | c)) + mean over [G(z) | c ; x_real | c'] of softplus(D(.))   (c' != c)

The sample and mismatched rows share one mean, GAN-CLS's average of the two fake terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from engine.model import add_noise


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """L_D = mean softplus(-real) + mean softplus(fake); logits of any shape."""
    loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    return loss, {"gan_d_loss": loss.item(), "gan_real_logit": real_logits.mean().item(),
                  "gan_fake_logit": fake_logits.mean().item()}


def generator_loss(fake_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """L_G = mean softplus(-fake): the generator raises D's logit on its own samples."""
    loss = F.softplus(-fake_logits).mean()
    return loss, {"gan_g_loss": loss.item()}


class DiscriminatorHead(nn.Module):
    """Per-token logits [B, N] from token states [B, N, D]."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.float()).squeeze(-1)


class FeatureTap:
    """Keeps the output of a transformer's last block during a forward pass (`with tap: ...`)."""

    def __init__(self, transformer: nn.Module):
        blocks = getattr(transformer, "blocks", None)
        if not blocks:
            raise ValueError(f"{type(transformer).__name__} has no `blocks` to read discriminator features from")
        self.block, self.features, self._handle = blocks[-1], None, None

    def _keep(self, module, inputs, output):
        self.features = output[0] if isinstance(output, tuple) else output

    def __enter__(self) -> "FeatureTap":
        self.features = None
        self._handle = self.block.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


@dataclass
class RealComparison:
    """What a fake-score update needs to train the discriminator as well (dmd.fake_score_updates):
    the head, the tap on the fake score's last block, this update's real latents [B, C, T, h, w]
    with their caption states, and L_D's weight."""
    head: nn.Module
    tap: FeatureTap
    real: torch.Tensor
    real_text: torch.Tensor
    weight: float
    mismatch: bool = False  # also the real latents under the next clip's caption, as fakes (GAN-CLS)

    def with_real(self, x_t: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, gen: torch.Generator):
        """The fake score's batch with the real latents appended, noised to the same levels (and,
        with `mismatch`, appended again under captions rolled by one clip)."""
        eps = torch.randn(self.real.shape, generator=gen).to(x_t.device)
        real_t = add_noise(self.real, eps, sigma)
        rows, texts = [x_t, real_t], [text, self.real_text]
        if self.mismatch:
            rows, texts = rows + [real_t], texts + [self.real_text.roll(1, dims=0)]
        return torch.cat(rows), sigma.repeat(len(rows)), torch.cat(texts)

    def loss(self, fakes: int) -> tuple[torch.Tensor, dict]:
        """weight * L_D from the tapped features of the last pass: its first `fakes` rows the
        sample, the next `fakes` the real clips, any after them the mismatched real clips."""
        logits = self.head(self.tap.features)  # [rows, tokens]
        real = logits[fakes:2 * fakes]
        fake = torch.cat([logits[:fakes], logits[2 * fakes:]])
        l_d, logs = discriminator_loss(real, fake)
        if logits.shape[0] > 2 * fakes:
            logs["gan_mismatch_logit"] = logits[2 * fakes:].mean().item()
        return self.weight * l_d, logs
