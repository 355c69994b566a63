"""The model wrapper every role shares: `predict_x0`, `add_noise`, `decode` (DESIGN.md §2).

Roles (teacher, student, fake_score) are configuration of this one class, not subclasses.
Flow matching, Wan convention: `x_t = (1 - s) x0 + s eps`, the network predicts
`v = eps - x0`, so `x0 = x_t - s v`; the transformer sees timestep `1000 s`.
"""

from __future__ import annotations

import torch

from engine.codec import VideoCodec


def add_noise(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """x_t = (1 - s) x0 + s eps; sigma is a float or [B] (broadcast over C, T, H, W)."""
    s = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device)
    s = s.view(-1, *([1] * (x0.dim() - 1))) if s.dim() else s
    return (1 - s) * x0 + s * eps


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 = x_t - s v, with sigma [B] broadcast over C, T, H, W."""
    return x_t - sigma.view(-1, *([1] * (x_t.dim() - 1))) * v


def guided(v_uncond: torch.Tensor, v_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: v_u + w (v_c - v_u)."""
    return v_uncond + guidance * (v_cond - v_uncond)


class FlowModel:
    """A diffusers video transformer seen as a flow-matching denoiser, plus the codec."""

    def __init__(self, transformer, codec: VideoCodec | None = None):
        self.transformer = transformer
        self.codec = codec
        self.nfe = 0  # network evaluations; a CFG step counts two

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype: the patch embedding's (diffusers keeps norms and time embeddings
        in float32 under a bf16 load, so the first parameter can mislead)."""
        embed = getattr(self.transformer, "patch_embedding", None)
        return embed.weight.dtype if embed is not None else next(self.transformer.parameters()).dtype

    def velocity(self, x_t: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """v prediction (float32) for x_t [B, C, T, h, w], sigma [B], text states [B, L, D]."""
        self.nfe += 1
        out = self.transformer(
            hidden_states=x_t.to(self.device, self.dtype),
            timestep=(sigma * 1000).to(self.device, self.dtype),
            encoder_hidden_states=text.to(self.device, self.dtype),
            return_dict=False,
        )[0]
        return out.float()

    def guided_velocity(self, x_t, sigma, text, uncond=None, guidance: float = 1.0) -> torch.Tensor:
        """v with classifier-free guidance; one batched pass of [uncond; cond] counted as 2 NFE."""
        if uncond is None or guidance == 1.0:
            return self.velocity(x_t, sigma, text)
        v = self.velocity(torch.cat([x_t, x_t]), torch.cat([sigma, sigma]), torch.cat([uncond, text]))
        self.nfe += 1
        v_uncond, v_cond = v.chunk(2)
        return guided(v_uncond, v_cond, guidance)

    def predict_x0(self, x_t, sigma, text, uncond=None, guidance: float = 1.0) -> torch.Tensor:
        """x0 estimate (float32) from x_t at noise level sigma [B]."""
        v = self.guided_velocity(x_t, sigma, text, uncond, guidance)
        return x0_from_velocity(x_t.float(), v, sigma.to(v.device, torch.float32))

    add_noise = staticmethod(add_noise)

    def decode(self, latents: torch.Tensor):
        """uint8 frames [B, T, H, W, 3] from normalised latents."""
        return self.codec.decode(latents)
