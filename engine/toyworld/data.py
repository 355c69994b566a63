"""toyworld's data source: prompts from the renderer's caption splits, real clips rendered and
encoded as a run needs them (engine/toyworld/latents.py). Registered as world "toyworld"
(engine/toyworld/plugin.py) for the generic trainers (engine/data.py)."""

from __future__ import annotations

import numpy as np

from engine.data import check_split
from engine.toyworld.latents import LatentPool
from engine.toyworld.render import sample_clip

SPLIT_NAMES = {"train": "train", "heldout": "public-heldout"}
OWN_COUNT = {"train": 512, "heldout": 64}  # the split's own list: its first clips' captions


class ToyworldData:
    name = "toyworld"
    has_clips = True  # rendered on demand

    def prompts(self, split: str = "train", count: int | None = None, seed: int | None = None) -> list[str]:
        check_split(split)
        if seed is None:
            indices = range(OWN_COUNT[split] if count is None else count)
        else:
            indices = np.random.default_rng([seed, 7]).integers(2**31, size=count or OWN_COUNT[split])
        return [sample_clip(SPLIT_NAMES[split], int(i))[1] for i in indices]

    def pool(self, codec, text, *, capacity: int, seed: int, frames: int, size: int) -> LatentPool:
        return LatentPool(codec, text, capacity=capacity, seed=seed, frames=frames, size=size)
