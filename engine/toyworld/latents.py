"""A growing pool of encoded toyworld clips (latents + caption states) for training loops.

Rendering and VAE-encoding a clip costs about as much as a training step, so loops add a few
fresh clips per step and sample batches from everything encoded so far (bounded by capacity,
oldest replaced first). Clip j of a pool is fixed by (seed, j), so a resumed run can rebuild
exactly the pool it had (`fast_forward`). Caption states are stored in float16.

With `reversed_pairs`, the pool also keeps, where a clip played backwards (`render.reversed_clip`)
is a training combination, a minimal pair of captions: the clip and its reverse worded from one
random stream, so they pick the same template, colour, shape and background words and parallel
motion phrases ("drifting leftward" / "drifting rightward"). `pair_batch` returns clips beside
their time-reversed latents (exact: the VAE codes frames one by one) under those two captions.

With `motions`, the pool keeps only the stream's clips whose every object moves in one of those
ways (a narrower world, e.g. left/right only, to test what a fresh network can learn).

A pool of clips longer than one (`frames` > render.CLIP_FRAMES) holds the world's long clips, the
ground truth of a stream: what a causal student's continuation term learns from
(engine/stream/continuation.py).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.codec import VideoCodec
from engine.textenc import TextEncoder
from engine.toyworld import world
from engine.toyworld.render import CLIP_FRAMES, caption, render, render_long, reversed_clip, sample_clip


class LatentPool:
    def __init__(self, codec: VideoCodec, text: TextEncoder, split: str = "train",
                 capacity: int = 12000, seed: int = 0, frames: int = 17, size: int = 64, train_words: bool = False,
                 reversed_pairs: bool = False, motions: tuple[str, ...] | None = None):
        if reversed_pairs and frames > CLIP_FRAMES:
            raise ValueError(f"reversed pairs need clips of at most {CLIP_FRAMES} frames, got frames={frames}")
        if motions is not None and not (motions and set(motions) <= set(world.MOTIONS)):
            raise ValueError(f"LatentPool motions must be a non-empty subset of {world.MOTIONS}, got {motions!r}")
        self.motions = motions
        self.codec, self.text, self.split = codec, text, split
        self.train_words = train_words  # word new train clips from world.TRAIN_ONLY_WORDS too
        self.frames, self.clip_size = frames, size
        self.capacity = capacity
        self.seed = seed
        self.latents: torch.Tensor | None = None  # [capacity, C, T, h, w]
        self.states: torch.Tensor | None = None  # [capacity, L, D] float16
        self.captions: list[str] = []
        self.size = 0  # filled slots
        self.added = 0  # clips of the stream consumed so far (a fast-forward skips some)
        self.slots: list[int] = []  # filled slot indices, ascending (clip j lives in slot j % capacity)
        self.reversed_pairs = reversed_pairs
        self.pair_states: torch.Tensor | None = None  # [capacity, L, D] float16: the clip, pair-worded
        self.reversed_states: torch.Tensor | None = None  # [capacity, L, D] float16: its reverse, pair-worded
        self.reversible = np.zeros(capacity, bool)  # slot holds a clip whose reverse is a training combination
        self._held = world.heldout_combos()

    def _clip(self, j: int):
        """Clip j of the stream: a split clip at an index drawn from (seed, j); with `motions`, the
        first of the draws (seed, j), (seed, j, 1), ... whose objects all move in those ways."""
        for attempt in range(10_000):
            key = [self.seed, j] + ([attempt] if attempt else [])
            index = int(np.random.default_rng(key).integers(2**31))
            spec, text = sample_clip(self.split, index, train_words=self.train_words)
            if self.motions is None or all(o.motion in self.motions for o in spec.objects):
                return spec, text
        raise ValueError(f"no {self.split} clip in 10000 draws moves only in {self.motions!r}")

    def add(self, count: int) -> None:
        """Render, encode and store the next `count` clips of the pool's stream."""
        specs = [self._clip(self.added + i) for i in range(count)]
        videos = np.stack([self.render(spec) for spec, _ in specs])  # [n, T, H, W, 3]
        captions = [caption for _, caption in specs]
        z = self.codec.encode(videos)
        states = self.text.encode(captions).half().cpu()
        if self.latents is None:
            self.latents = torch.empty((self.capacity, *z.shape[1:]))
            self.states = torch.empty((self.capacity, *states.shape[1:]), dtype=torch.float16)
            self.captions = [""] * self.capacity
        if self.reversed_pairs:
            pairs = [self._pair(self.added + i, spec) for i, (spec, _) in enumerate(specs)]
            pair_states = self.text.encode([p[0] if p else "" for p in pairs]).half().cpu()
            reversed_states = self.text.encode([p[1] if p else "" for p in pairs]).half().cpu()
            if self.reversed_states is None:
                self.pair_states = torch.zeros_like(self.states)
                self.reversed_states = torch.zeros_like(self.states)
        filled = set(self.slots)
        for i in range(count):
            slot = self.added % self.capacity
            self.latents[slot], self.states[slot], self.captions[slot] = z[i], states[i], captions[i]
            if self.reversed_pairs:
                self.pair_states[slot], self.reversed_states[slot] = pair_states[i], reversed_states[i]
                self.reversible[slot] = pairs[i] is not None
            filled.add(slot)
            self.added += 1
        self.slots = sorted(filled)
        self.size = len(self.slots)

    def render(self, spec) -> np.ndarray:
        """A clip of the pool's length: the clip itself up to CLIP_FRAMES frames, past that the
        world's long clip (its motion going on at the clip's pace, movers wrapping at the edges;
        render.render_long), as a longer span of a real video would."""
        if self.frames > CLIP_FRAMES:
            return render_long(spec, self.frames, self.clip_size)
        return render(spec, self.frames, self.clip_size)

    def _pair(self, j: int, spec) -> tuple[str, str] | None:
        """(caption of clip j, caption of it played backwards) from one random stream, or None
        where the reverse is a held-out combination. The word lists of opposite motions are
        parallel (world.MOTION_WORDS), so the two differ only in the motion phrases."""
        back = reversed_clip(spec, self.frames)
        if any((o.colour, o.shape, o.motion) in self._held for o in back.objects):
            return None
        words = [self.seed, j, 1]
        return (caption(spec, np.random.default_rng(words), train_words=self.train_words),
                caption(back, np.random.default_rng(words), train_words=self.train_words))

    def pair_batch(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n // 2 reversible clips under their pair captions, then the same clips reversed in time
        under the reverse's: (latents [n, C, T, h, w], caption states [n, L, D] float32); n even."""
        if not self.reversed_pairs or n % 2:
            raise ValueError(f"pair_batch needs a pool made with reversed_pairs and an even n, got n={n}")
        slots = np.asarray(self.slots)
        slots = slots[self.reversible[slots]]
        if not len(slots):
            raise ValueError(f"pair_batch: none of the pool's {self.size} clips has a reverse that is a training combination")
        idx = slots[rng.integers(len(slots), size=n // 2)]
        x0 = self.latents[idx]
        latents = torch.cat([x0, x0.flip(2)])
        states = torch.cat([self.pair_states[idx], self.reversed_states[idx]]).float()
        return latents, states

    def fast_forward(self, total: int, keep: int | None = None, chunk: int = 32) -> None:
        """Rebuild the pool as after `total` clips of the stream, encoding only the last
        `keep` (default: capacity, which restores it exactly). Only the encoded clips are
        sampled afterwards: skipped ones leave no empty slots."""
        self.added = max(0, total - min(keep or self.capacity, self.capacity))
        while self.added < total:
            self.add(min(chunk, total - self.added))

    def batch(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(latents [n, C, T, h, w], caption states [n, L, D] float32, captions)."""
        idx = np.asarray(self.slots)[rng.integers(self.size, size=n)]  # never an empty slot
        return self.latents[idx], self.states[idx].float(), [self.captions[i] for i in idx]
