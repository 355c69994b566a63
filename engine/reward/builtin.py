"""Built-in pixel rewards: `reward(frames: uint8[T, H, W, 3], prompt: str) -> float`.

None needs model weights; none needs to be differentiable (the latent reward model learns
them). Higher is better for all; each is roughly in [0, 1] for typical clips.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from engine import plugins


def _luma(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]  # [T, H, W]


def colourfulness(frames: np.ndarray, prompt: str = "") -> float:
    """Hasler & Süsstrunk (2003) colourfulness M = sigma_rgyb + 0.3 mu_rgyb, / 100, mean over frames."""
    f = frames.astype(np.float32)
    rg = f[..., 0] - f[..., 1]
    yb = 0.5 * (f[..., 0] + f[..., 1]) - f[..., 2]
    sigma = np.sqrt(rg.std(axis=(1, 2)) ** 2 + yb.std(axis=(1, 2)) ** 2)
    mu = np.sqrt(rg.mean(axis=(1, 2)) ** 2 + yb.mean(axis=(1, 2)) ** 2)
    return float(np.mean(sigma + 0.3 * mu) / 100)


def brightness(frames: np.ndarray, prompt: str = "", target: float = 0.5) -> float:
    """Exposure toward a target mean luma (0..1): 1 - |mean luma - target| / max distance."""
    mean = _luma(frames).mean() / 255
    return float(1 - abs(mean - target) / max(target, 1 - target))


def contrast(frames: np.ndarray, prompt: str = "") -> float:
    """RMS contrast: standard deviation of luma / 128, mean over frames."""
    return float(_luma(frames).std(axis=(1, 2)).mean() / 128)


def sharpness(frames: np.ndarray, prompt: str = "") -> float:
    """Mean absolute Laplacian of luma / 32."""
    y = _luma(frames)
    lap = 4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2] - y[:, 1:-1, 2:]
    return float(np.abs(lap).mean() / 32)


def motion(frames: np.ndarray, prompt: str = "") -> float:
    """Amount of motion: mean absolute frame difference of luma / 16."""
    y = _luma(frames)
    return float(np.abs(np.diff(y, axis=0)).mean() / 16) if len(y) > 1 else 0.0


def smoothness(frames: np.ndarray, prompt: str = "") -> float:
    """Temporal smoothness: 1 - mean |f_t - (f_t-1 + f_t+1) / 2| / 32 (luma)."""
    y = _luma(frames)
    if len(y) < 3:
        return 1.0
    return float(1 - np.abs(y[1:-1] - (y[:-2] + y[2:]) / 2).mean() / 32)


def compressibility(frames: np.ndarray, prompt: str = "") -> float:
    """JPEG compressibility (DDPO's non-differentiable example): 1 - KB per frame at q=75 / 8."""
    sizes = []
    for frame in frames[:: max(1, len(frames) // 4)]:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=75)
        sizes.append(buf.tell() / 1024)
    return float(1 - np.mean(sizes) / 8)


PALETTE_BINS = 4  # per channel: 64 colour bins


def palette_histogram(pixels: np.ndarray) -> np.ndarray:
    q = (pixels.reshape(-1, 3).astype(np.int64) * PALETTE_BINS) // 256
    idx = (q[:, 0] * PALETTE_BINS + q[:, 1]) * PALETTE_BINS + q[:, 2]
    hist = np.bincount(idx, minlength=PALETTE_BINS**3).astype(np.float64)
    return hist / hist.sum()


def palette_reward(reference: np.ndarray):
    """Similarity to a reference image's palette: 1 - total variation between colour histograms."""
    if reference.ndim != 3 or reference.shape[-1] != 3 or reference.dtype != np.uint8:
        raise ValueError(f"reference must be a uint8 RGB image [H, W, 3], got {reference.dtype} {reference.shape}")
    ref = palette_histogram(reference)

    def palette(frames: np.ndarray, prompt: str = "") -> float:
        return float(1 - 0.5 * np.abs(palette_histogram(frames) - ref).sum())

    return palette


# by name; model-family plug-ins add their own (engine/plugins.py: toyworld's judge rewards)
REWARDS = {"colourfulness": colourfulness, "brightness": brightness, "contrast": contrast,
           "sharpness": sharpness, "motion": motion, "smoothness": smoothness,
           "compressibility": compressibility}


def get(name: str):
    plugins.load()
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; built-ins: {', '.join(sorted(REWARDS))}")
    return REWARDS[name]
