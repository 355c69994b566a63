"""A growing pool of encoded toyworld clips (latents + caption states) for training loops.

Rendering and VAE-encoding a clip costs about as much as a training step, so loops add a few
fresh clips per step and sample batches from everything encoded so far (bounded by capacity,
oldest replaced first). Caption states are stored in float16 to halve memory.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.codec import VideoCodec
from engine.textenc import TextEncoder
from engine.toyworld.render import render, sample_clip


class LatentPool:
    def __init__(self, codec: VideoCodec, text: TextEncoder, split: str = "train",
                 capacity: int = 12000, seed: int = 0):
        self.codec, self.text, self.split = codec, text, split
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.latents: torch.Tensor | None = None  # [capacity, C, T, h, w]
        self.states: torch.Tensor | None = None  # [capacity, L, D] float16
        self.captions: list[str] = []
        self.size = 0
        self.added = 0

    def add(self, count: int) -> None:
        """Render, encode and store `count` fresh clips of the split."""
        specs = [sample_clip(self.split, int(self.rng.integers(2**31))) for _ in range(count)]
        videos = np.stack([render(spec) for spec, _ in specs])  # [n, T, H, W, 3]
        captions = [caption for _, caption in specs]
        z = self.codec.encode(videos)
        states = self.text.encode(captions).half().cpu()
        if self.latents is None:
            self.latents = torch.empty((self.capacity, *z.shape[1:]))
            self.states = torch.empty((self.capacity, *states.shape[1:]), dtype=torch.float16)
            self.captions = [""] * self.capacity
        for i in range(count):
            slot = self.added % self.capacity
            self.latents[slot], self.states[slot], self.captions[slot] = z[i], states[i], captions[i]
            self.added += 1
        self.size = min(self.added, self.capacity)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(latents [n, C, T, h, w], caption states [n, L, D] float32, captions)."""
        idx = self.rng.integers(self.size, size=n)
        return self.latents[idx], self.states[idx].float(), [self.captions[i] for i in idx]
