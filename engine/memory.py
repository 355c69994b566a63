"""Peak-memory estimate shown before a generation, the device's free memory, and what an
out-of-memory error tells the user.

The estimate is arithmetic on the configs, not a measurement (none can be taken before the
run): resident weights, plus the larger of the denoiser's and the VAE decoder's activations.

- weights: every loaded model's parameters at their dtype; under offload only the largest
  (the others wait on the CPU).
- denoise: per block, for B = 2 under CFG (one batched [uncond; cond] pass) else 1, and N
  video tokens of width D: the hidden states, q/k/v/out and the FFN's hidden layer,
  B * N * (6 D + F) values. SDPA (flash / memory-efficient kernels, also on the CPU) never
  materialises the N x N scores, so there is no quadratic term.
- decode: the VAE's widest full-resolution stage, about LIVE live tensors of C0 channels over
  the frames decoded together (all frames; one with slicing; a causal chunk of 4 for the Wan VAE)
  at the full frame size (a 256-pixel tile with tiling), plus the output clip in float32.
  LIVE is 3 for a per-frame AutoencoderKL. For the Wan VAE it is 14, from a measurement: its
  upsampling stages run 2 C0 channels at full size and it keeps a feature cache per conv; the
  real-size Wan VAE decoding 81x480x832 in bf16 on an H200 peaked 4.2 GB over what was resident,
  where 3 live tensors gave 1.2 GB and 14 give 4.4 GB (`python bench/gpu.py`; docs/experiments/gpu-real-size.md,
  "GPU path at real size").
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass

import psutil
import torch

GB = 1024**3
WAN_DECODE_LIVE = 14  # live full-size tensors of C0 channels in a Wan VAE decode (module docstring)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int  # bytes
    denoise: int
    decode: int

    @property
    def peak(self) -> int:
        return self.weights + max(self.denoise, self.decode)

    def describe(self, free: int | None = None) -> str:
        text = (f"≈ {self.peak / GB:.2f} GB peak (weights {self.weights / GB:.2f}, denoise {self.denoise / GB:.2f}, "
                f"decode {self.decode / GB:.2f})")
        if free is not None:
            text += f" · {free / GB:.1f} GB free"
            if self.peak > free:
                text += " · likely too much: fewer frames, a smaller size, VAE tiling or CPU offload"
        return text


def _param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) if module is not None else 0


def estimate(loaded, settings: dict, options) -> MemoryEstimate:
    """Estimate for one request's concrete settings (`Engine.settings`) under `options`."""
    student = settings["role"] == "student"
    flow = loaded.student(settings["steps"])[0] if student else loaded.teacher
    models = [_param_bytes(getattr(loaded.text, "encoder", None)), _param_bytes(flow.transformer),
              _param_bytes(loaded.codec.vae)]
    weights = max(models) if options.offload else sum(models)
    dtype_bytes = torch.tensor([], dtype=options.torch_dtype).element_size()
    c, t, h, w = loaded.codec.latent_shape(settings["frames"], settings["height"], settings["width"])
    cfg = flow.transformer.config
    pt, ph, pw = cfg.patch_size
    n = math.ceil(t / pt) * math.ceil(h / ph) * math.ceil(w / pw)
    d = cfg.num_attention_heads * cfg.attention_head_dim
    batch = 1 if student or (settings.get("guidance") or 1.0) == 1.0 else 2
    denoise = batch * n * (6 * d + cfg.ffn_dim) * dtype_bytes
    vae = loaded.codec.vae.config
    c0 = (vae.base_dim if loaded.codec.is_wan else vae.block_out_channels[0])
    side_h, side_w = settings["height"], settings["width"]
    if options.vae_tiling:
        side_h, side_w = min(side_h, 256), min(side_w, 256)
    together = 4 if loaded.codec.is_wan else (1 if options.vae_slicing else settings["frames"])
    decode_dtype = options.torch_decode_dtype or options.torch_dtype
    decode_bytes = torch.tensor([], dtype=decode_dtype).element_size()
    live = WAN_DECODE_LIVE if loaded.codec.is_wan else 3
    decode = live * together * c0 * side_h * side_w * decode_bytes
    decode += settings["frames"] * 3 * settings["height"] * settings["width"] * 4  # the float32 clip
    return MemoryEstimate(weights, denoise, decode)


def free_bytes(device: str) -> int:
    """Free memory on the device: CUDA's free bytes, or available RAM on the CPU."""
    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return int(psutil.virtual_memory().available)


def release(device: str) -> None:
    """Give cached blocks back after a failure so the next request starts clean."""
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


ALLOCATION_FAILURES = ("out of memory", "can't allocate memory",  # torch's own, and the CPU allocator's
                       "cudnn_status_alloc_failed", "cublas_status_alloc_failed",  # the GPU libraries'
                       "cudnn_status_not_enough_workspace")  # (their workspaces come from the same card)


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err).lower() for text in ALLOCATION_FAILURES)


def oom_message(settings: dict, estimate_text: str, device: str) -> str:
    return (f"out of memory on {device} for {settings['frames']} frames at {settings['width']}x{settings['height']}, "
            f"{settings['role']} {settings['steps']} steps ({estimate_text}); memory was released. Try fewer frames, "
            f"a smaller size, VAE tiling or CPU offload")
