"""The toyworld VAE: decode time of a 17x64x64 clip and reconstruction PSNR, side by side with
the alternative the design considered (a tiny 3D AutoencoderKLWan, random weights: speed only).

    python bench/vae.py [--repeats 7] [--clips 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


from engine import paths
from engine.codec import FRAME_CHUNK, VideoCodec
from engine.loading import quiet_libraries
from engine.toyworld.render import render, sample_clip
from engine.toyworld.vae_bake import psnr


def decode_time(codec: VideoCodec, latents: torch.Tensor, repeats: int) -> float:
    codec.decode(latents)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        codec.decode(latents)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    quiet_libraries()
    from diffusers import AutoencoderKL, AutoencoderKLWan

    vae = AutoencoderKL.from_pretrained(paths.TOYWORLD / "vae", use_safetensors=True).eval()
    wan = AutoencoderKLWan(base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    rows = []
    cases = (("per-frame AutoencoderKL (shipped)", vae, True), ("per-frame AutoencoderKL, NCHW layout", vae, False),
             ("tiny AutoencoderKLWan (random)", wan, True))
    for name, model, channels_last in cases:
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for dtype in (torch.float32, torch.bfloat16):
            codec = VideoCodec(model, decode_dtype=dtype, channels_last=channels_last)
            z = torch.randn(1, *codec.latent_shape(17, 64, 64))
            rows.append((name, params, str(dtype).replace("torch.", ""), decode_time(codec, z, args.repeats)))
            model.to(torch.float32)
    fp32 = rows[0][3]
    print(f"torch threads {args.threads}; median of {args.repeats}; 17x64x64 clip\n")
    print("| VAE | params (M) | decode dtype | decode s | vs shipped fp32 |")
    print("|---|---|---|---|---|")
    for name, params, dtype, t in rows:
        print(f"| {name} | {params:.2f} | {dtype} | {t:.4f} | {t / fp32:.2f}x |")
    print()
    for split in ("public-eval", "public-heldout"):
        print(f"PSNR {split} ({args.clips} clips, fp32): {psnr(vae, args.clips, split):.2f} dB")
    bf16_parity(vae, args.clips)
    batch_decode(vae, args.repeats)


def batch_decode(vae, repeats: int) -> None:
    """A tune's decode: 4 clips (68 frames) at once, in one VAE call vs in FRAME_CHUNK-frame calls."""
    import copy

    print(f"\n4 clips of 17x64x64 (a tune batch) | one 68-frame call | {FRAME_CHUNK}-frame calls | ratio")
    for dtype in (torch.float32, torch.bfloat16):
        codec = VideoCodec(copy.deepcopy(vae), decode_dtype=dtype)
        z = torch.randn(4, *codec.latent_shape(17, 64, 64))
        codec.frame_chunk = 68
        whole = decode_time(codec, z, repeats)
        codec.frame_chunk = FRAME_CHUNK
        chunked = decode_time(codec, z, repeats)
        print(f"{str(dtype).replace('torch.', '')} | {whole:.4f} s | {chunked:.4f} s | {chunked / whole:.2f}x")


def bf16_parity(vae, clips: int) -> None:
    """What decoding in bf16 (the engine's `decode_dtype="auto"` on bf16-capable CPUs) costs:
    reconstruction PSNR of public-eval clips with an fp32 and a bf16 decode of the same latents;
    and what the channels_last layout changes against a plain (NCHW) fp32 decode."""
    import copy

    fp32, bf16 = VideoCodec(vae), VideoCodec(copy.deepcopy(vae), decode_dtype=torch.bfloat16)
    plain = VideoCodec(copy.deepcopy(vae), channels_last=False)
    scores, worst, layout_worst = {"float32": [], "bfloat16": []}, 0, 0
    for i in range(clips):
        video = render(sample_clip("public-eval", i)[0])
        z = fp32.encode(video[None])
        a, b = fp32.decode(z)[0].astype(np.float32), bf16.decode(z)[0].astype(np.float32)
        worst = max(worst, int(np.abs(a - b).max()))
        layout_worst = max(layout_worst, int(np.abs(a - plain.decode(z)[0].astype(np.float32)).max()))
        for name, out in (("float32", a), ("bfloat16", b)):
            scores[name].append(10 * np.log10(255.0**2 / max(((out - video) ** 2).mean(), 1e-10)))
    print(f"decode dtype parity ({clips} public-eval clips): reconstruction PSNR fp32 "
          f"{np.mean(scores['float32']):.2f} dB, bf16 {np.mean(scores['bfloat16']):.2f} dB; "
          f"largest pixel difference between the two decodes {worst}/255")
    print(f"layout parity: largest pixel difference between the channels_last and the NCHW fp32 decode "
          f"{layout_worst}/255")


if __name__ == "__main__":
    main()
