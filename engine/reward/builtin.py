"""Built-in pixel rewards: `reward(frames: uint8[T, H, W, 3], prompt: str) -> float`.

None needs model weights; none needs to be differentiable (the latent reward model learns
them). Higher is better for all.
"""

from __future__ import annotations

import numpy as np


def colourfulness(frames: np.ndarray, prompt: str = "") -> float:
    """Hasler & Süsstrunk (2003) colourfulness M = sigma_rgyb + 0.3 mu_rgyb, / 100, mean over frames."""
    f = frames.astype(np.float32)
    rg = f[..., 0] - f[..., 1]
    yb = 0.5 * (f[..., 0] + f[..., 1]) - f[..., 2]
    sigma = np.sqrt(rg.std(axis=(1, 2)) ** 2 + yb.std(axis=(1, 2)) ** 2)
    mu = np.sqrt(rg.mean(axis=(1, 2)) ** 2 + yb.mean(axis=(1, 2)) ** 2)
    return float(np.mean(sigma + 0.3 * mu) / 100)


def toyworld_semantic(frames: np.ndarray, prompt: str) -> float:
    """MiniBench's judge against the caption: mean of colour, shape, motion and count accuracy."""
    from engine.toyworld import judge
    from engine.toyworld.parse import parse_caption
    from engine.toyworld.render import ClipSpec, ObjectSpec

    triples = parse_caption(prompt)
    if not triples:
        return 0.0
    spec = ClipSpec("black", tuple(ObjectSpec(s, c, m, 0.5, 0.5, 0.1) for c, s, m in triples))
    return float(np.mean(list(judge.score(frames, spec).values())))


REWARDS = {"colourfulness": colourfulness, "toyworld-semantic": toyworld_semantic}


def get(name: str):
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; built-ins: {', '.join(sorted(REWARDS))}")
    return REWARDS[name]
