"""Bake stage 1: the toyworld VAE, a per-frame diffusers `AutoencoderKL` trained on renders.

Chosen by measurement (docs/experiments/teacher-v1.md, bench/vae.py): the per-frame AutoencoderKL with
block_out_channels (16, 32, 64, 64) is the only candidate that decodes a 17x64x64 clip within
0.15 s on 2 CPU cores in fp32; 16 latent channels and no mid-block attention for fidelity.
Trained on batches of single frames (much faster than whole clips), MSE reconstruction plus a
tiny KL, warm-up then cosine learning-rate decay, resumable from atomic checkpoints.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from engine import checkpoint, loop
from engine.events import Progress
from engine.schedule import warmup_cosine
from engine.toyworld.render import render, sample_clip


@dataclass(frozen=True)
class VaeBakeConfig:
    steps: int = 8000  # length of the learning-rate schedule
    stop_at: int = 3000  # where training ends: 34 dB on public-eval there, past the 30 dB target
    batch_frames: int = 16  # frames per step (4 clips x 4 frames)
    lr: float = 1e-3  # peak learning rate after warm-up
    min_lr: float = 1e-5  # end of the cosine decay
    warmup: int = 200  # linear warm-up steps
    kl_weight: float = 1e-6  # keeps the latent scale bounded without hurting fidelity
    checkpoint_every: int = 250  # steps between atomic checkpoints
    eval_clips: int = 32  # public-eval clips for the PSNR report
    seed: int = 0  # data and initialisation seed


def make_vae() -> AutoencoderKL:
    """The toyworld VAE architecture (random weights)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 64),
        latent_channels=16,
        layers_per_block=1,
        norm_num_groups=8,
        mid_block_add_attention=False,
    )


def to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def frame_batch(rng: np.random.Generator, n: int, clips: int = 4) -> torch.Tensor:
    """`n` training frames from `clips` random train clips: [n, 3, 64, 64] in [-1, 1]."""
    frames = []
    for _ in range(clips):
        spec, _ = sample_clip("train", int(rng.integers(10**7)))
        video = render(spec)
        frames.append(video[rng.choice(len(video), n // clips, replace=False)])
    return to_unit(np.concatenate(frames))


def learning_rate(cfg: VaeBakeConfig, step: int) -> float:
    return warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr, cfg.min_lr)


@torch.no_grad()
def psnr(vae: AutoencoderKL, clips: int, split: str = "public-eval") -> float:
    """Mean PSNR (dB, 8-bit peak) of reconstructions of `clips` whole clips of a split."""
    vae.eval()
    values = []
    for i in range(clips):
        video = render(sample_clip(split, i)[0])
        x = to_unit(video)
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
        recon_u8 = ((recon.clamp(-1, 1) + 1) * 127.5).round()
        mse = ((recon_u8 - torch.from_numpy(video).permute(0, 3, 1, 2).float()) ** 2).mean()
        values.append(10 * math.log10(255.0**2 / max(mse.item(), 1e-10)))
    vae.train()
    return float(np.mean(values))


def train(cfg: VaeBakeConfig, work: Path, resume: bool = True) -> Iterator[Progress]:
    """Train (or continue training) the VAE; yields Progress; checkpoints under `work`."""
    torch.manual_seed(cfg.seed)
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    start = 0
    found = checkpoint.latest(work) if resume else None
    if found:
        start, state, _ = found
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    vae.train()
    end = min(cfg.steps, cfg.stop_at)
    loss_avg = None

    def step(i: int) -> dict:
        nonlocal loss_avg
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, i)
        x = frame_batch(np.random.default_rng([cfg.seed, i]), cfg.batch_frames)  # fixed per step: exact resume
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.mode()).sample
        loss = torch.nn.functional.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        metrics = {"loss": loss_avg}
        if (i + 1) % (cfg.checkpoint_every * 4) == 0 or i + 1 == end:
            metrics["psnr"] = psnr(vae, 8)
        return metrics

    def save(done: int, metrics: dict) -> bool:
        checkpoint.save(work, done, {"model": vae.state_dict(), "opt": opt.state_dict()}, metrics)
        return True

    yield from loop.run(step, start=start, total=end, save=save, checkpoint_every=cfg.checkpoint_every,
                        phase=loop.one_phase("vae", end), report_every=cfg.checkpoint_every)


def export(work: Path, out: Path, cfg: VaeBakeConfig) -> dict:
    """Write the newest checkpoint as a diffusers folder with latent scale/shift set from data."""
    found = checkpoint.latest(work)
    if not found:
        raise FileNotFoundError(f"no complete VAE checkpoint under {work}")
    step, state, _ = found
    vae = make_vae()
    vae.load_state_dict(state["model"])
    vae.eval()
    with torch.no_grad():
        rng = np.random.default_rng(12345)
        z = torch.cat([vae.encode(frame_batch(rng, 16)).latent_dist.mode() for _ in range(16)])
    shift, std = z.mean().item(), z.std().item()
    vae.register_to_config(shift_factor=shift, scaling_factor=1.0 / std)
    report = {"step": step, "psnr_public_eval": psnr(vae, cfg.eval_clips), "shift": shift, "std": std}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp, safe_serialization=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return report
