"""Pixels <-> normalised latents for the two VAE families the engine loads.

- per-frame `AutoencoderKL` (toyworld): each frame is coded alone, latents [B, C, T, h, w],
  normalised as `(z - shift_factor) * scaling_factor`;
- `AutoencoderKLWan` (Wan2.1): causal 3D, T' = (T - 1) / 4 + 1 latent frames, normalised per
  channel by `latents_mean` / `latents_std` as Wan's pipeline does.
"""

from __future__ import annotations

import numpy as np
import torch

# Per-frame VAE decodes run this many frames per call: on 2 CPU cores a tune batch's 68 frames in
# one call took 1.55x (fp32) / 1.11x (bf16) the time of 32-frame calls (`python bench/vae.py`
# times both; docs/experiments/teacher-v1.md), smaller activations staying in cache.
FRAME_CHUNK = 32


class VideoCodec:
    def __init__(self, vae, decode_dtype: torch.dtype | None = None, channels_last: bool = True):
        self.vae = vae.eval()
        self.is_wan = type(vae).__name__ == "AutoencoderKLWan"
        self.decode_dtype = decode_dtype  # e.g. bf16 for fast CPU/GPU previews; None = as loaded
        self.frame_chunk = FRAME_CHUNK  # per-frame VAE: frames per decode call
        cfg = vae.config
        if self.is_wan:
            self.channels = cfg.z_dim
            self.spatial = getattr(cfg, "scale_factor_spatial", 8)
            self.temporal = getattr(cfg, "scale_factor_temporal", 4)
        else:
            self.channels = cfg.latent_channels
            self.spatial = 2 ** (len(cfg.block_out_channels) - 1)
            self.temporal = 1
        # per-frame 2D VAE: NHWC (channels_last) convolutions decode toyworld clips faster on the CPU
        # (`python bench/vae.py` times it and checks the pixels against the NCHW layout)
        self.layout = torch.channels_last if channels_last and not self.is_wan else torch.contiguous_format
        if not self.is_wan:
            self.vae.to(memory_format=self.layout)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', h, w) of the latents for a clip of this size."""
        t = (frames - 1) // self.temporal + 1 if self.is_wan else frames
        return self.channels, t, height // self.spatial, width // self.spatial

    def check_frames(self, frames: int) -> None:
        if self.is_wan and (frames - 1) % self.temporal:
            raise ValueError(f"frames must be 4k+1 for this model (e.g. 17, 33, 81), got {frames}")

    def _wan_stats(self, like: torch.Tensor):
        mean = torch.tensor(self.vae.config.latents_mean, device=like.device, dtype=like.dtype)
        std = torch.tensor(self.vae.config.latents_std, device=like.device, dtype=like.dtype)
        return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> normalised latents [B, C, T', h, w] (float32)."""
        x = torch.as_tensor(frames)
        device, dtype = self.vae.device, self.vae.dtype
        x = x.to(device).permute(0, 4, 1, 2, 3).to(dtype) / 127.5 - 1.0  # [B, 3, T, H, W]
        b, _, t, h, w = x.shape
        if self.is_wan:
            z = self.vae.encode(x).latent_dist.mode().float()
            mean, std = self._wan_stats(z)
            return (z - mean) / std
        flat = x.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w)  # frames as a batch
        z = self.vae.encode(flat.contiguous(memory_format=self.layout)).latent_dist.mode().float()
        z = z.contiguous()  # [B*T, C, h, w]
        z = (z - (self.vae.config.shift_factor or 0.0)) * self.vae.config.scaling_factor
        return z.view(b, t, *z.shape[1:]).permute(0, 2, 1, 3, 4)  # [B, C, T, h, w]

    def decode_float(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, C, T', h, w] -> pixels [B, 3, T, H, W] in [-1, 1] (differentiable)."""
        dtype = self.decode_dtype or self.vae.dtype
        vae = self.vae if dtype == self.vae.dtype else self.vae.to(dtype)
        z = latents.to(vae.device, torch.float32)
        if self.is_wan:
            mean, std = self._wan_stats(z)
            try:
                return vae.decode((z * std + mean).to(dtype)).sample.float()
            except BaseException:
                # The Wan VAE decodes frame by frame through a feature cache it keeps on itself
                # and clears only when a decode ends; one that fails part-way (out of memory)
                # would keep every cached activation, with its autograd graph under a tune,
                # alive: about 100 GB on an H200 after a failed pixel-reward step at 33x480x832.
                vae.clear_cache()
                raise
        b, c, t, h, w = z.shape
        flat = z.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        flat = flat / self.vae.config.scaling_factor + (self.vae.config.shift_factor or 0.0)
        flat = flat.to(dtype).contiguous(memory_format=self.layout)
        x = torch.cat([vae.decode(part).sample.float().contiguous() for part in flat.split(self.frame_chunk)])  # [B*T, 3, H, W]
        return x.view(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Normalised latents [B, C, T', h, w] -> uint8 frames [B, T, H, W, 3]."""
        x = self.decode_float(latents)
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 4, 1).cpu().numpy()
