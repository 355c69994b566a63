"""Where a training job's prompts and real clips come from: a data source, passed to the trainers.

A data source has prompt splits ("train": what a run trains on; "heldout": what its before/after
is measured on) and, when it has real clips, a pool of them encoded to latents (the terms that
compare against real data need it: consistency distillation on noised real clips, the GAN's
real side, generator input "real"). The trainers never choose their data: the caller passes it.

- `PromptFile`: the user's own prompts (one a line, or a .jsonl / .csv with a `prompt` field),
  with an optional folder of real clips (`ClipFolder`: each video beside a .txt caption).
- a plug-in's source (engine/plugins.py), found by the world a model folder names in rushes.json
  (`world`): the embedded toyworld model's renderer is one.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from engine import plugins

SPLITS = ("train", "heldout")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".gif")


class ClipPool(Protocol):
    """Encoded real clips for a training loop (engine/distill/trainer.py draws batches from it)."""
    latents: object  # [capacity, C, T, h, w]: its shape gives the latent shape of a clip

    def add(self, count: int) -> None: ...
    def fast_forward(self, total: int) -> None: ...
    def batch(self, n: int, rng: np.random.Generator) -> tuple: ...  # (latents, caption states, captions)


class DataSource(Protocol):
    name: str  # names a run's data (a run folder is keyed by it)
    has_clips: bool  # whether `pool` gives real clips

    def prompts(self, split: str = "train", count: int | None = None, seed: int | None = None) -> list[str]:
        """The split's prompts: all of its own list (count None), its first `count`, or with
        `seed` `count` drawn from that seed (the same arguments give the same list)."""
        ...

    def pool(self, codec, text, *, capacity: int, seed: int, frames: int, size: int) -> ClipPool | None:
        """Its real clips, encoded with `codec` and `text`, or None when it has none."""
        ...


SOURCES: dict[str, Callable[[], DataSource]] = {}  # world name -> factory (registered by plug-ins)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown prompt split {split!r}; expected one of {SPLITS}")


def draw(prompts: list[str], count: int | None, seed: int | None) -> list[str]:
    """All of `prompts` (count None), the first `count` (seed None; cycling when there are
    fewer), or `count` drawn from `seed`, without replacement while there are enough."""
    if count is None:
        return list(prompts)
    if seed is None:
        return [prompts[i % len(prompts)] for i in range(count)]
    rng = np.random.default_rng([seed, 7])
    pick = rng.choice(len(prompts), size=count, replace=count > len(prompts))
    return [prompts[i] for i in pick]


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a .txt (one a line; blank lines and lines starting with # skipped), .jsonl
    or .csv (a `prompt` field) file; ValueError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompts file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        prompts = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {n} is not JSON ({err.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                    raise ValueError(f"{path}: line {n} has no string field 'prompt'")
                prompts.append(row["prompt"])
    elif path.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "prompt" not in rows[0]:
            raise ValueError(f"{path}: no 'prompt' column (columns: {', '.join(rows[0])})")
        prompts = [row["prompt"] or "" for row in rows]
    else:
        prompts = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        raise ValueError(f"prompts file {str(path)!r} has no prompts")
    return prompts


class ClipFolder:
    """Real clips from a folder: every video with a caption file of the same stem (`a.mp4` +
    `a.txt`), cut to its first `frames` frames, centre-cropped square and resized to `size`, all
    encoded once (`fast_forward`); `add` draws nothing new."""

    def __init__(self, folder: str | Path, codec, text, *, capacity: int, seed: int, frames: int, size: int):
        self.folder, self.codec, self.text = Path(folder), codec, text
        self.frames, self.size, self.capacity = frames, size, capacity
        if not self.folder.is_dir():
            raise ValueError(f"videos folder {str(self.folder)!r} does not exist")
        videos = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        missing = [p.name for p in videos if not p.with_suffix(".txt").exists()]
        if missing:
            raise ValueError(f"videos in {self.folder} without a caption file beside them "
                             f"(same name, .txt): {', '.join(missing[:5])}")
        if not videos:
            raise ValueError(f"videos folder {str(self.folder)} has no {'/'.join(VIDEO_SUFFIXES)} files")
        self.videos = videos[:capacity]
        self.latents = self.states = None
        self.captions: list[str] = []

    def _clip(self, path: Path) -> np.ndarray:
        import torch

        from engine.export import read_mp4  # ffmpeg: reads every suffix in VIDEO_SUFFIXES

        frames = read_mp4(path)  # [T, H, W, 3]
        if frames.ndim != 4 or len(frames) < self.frames:
            raise ValueError(f"{path} has {len(frames) if frames.ndim == 4 else 0} frames; the run needs "
                             f"at least {self.frames}")
        frames = frames[:self.frames]
        h, w = frames.shape[1:3]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + side, left:left + side]))
        small = torch.nn.functional.interpolate(square.permute(0, 3, 1, 2).float(), size=(self.size, self.size),
                                                mode="area")
        return small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def fast_forward(self, total: int) -> None:
        if self.latents is not None:
            return
        import torch

        self.captions = [p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in self.videos]
        latents = [self.codec.encode(self._clip(p)[None]) for p in self.videos]
        self.latents = torch.cat(latents)
        self.states = self.text.encode(self.captions).half().cpu()

    def add(self, count: int) -> None:
        self.fast_forward(0)

    def batch(self, n: int, rng: np.random.Generator):
        idx = rng.integers(len(self.captions), size=n)
        return self.latents[idx], self.states[idx].float(), [self.captions[i] for i in idx]


class PromptFile:
    """The user's prompts (both splits, unless a held-out file is given) and optional real clips."""

    def __init__(self, prompts: str | Path, videos: str | Path | None = None, heldout: str | Path | None = None):
        self.train = read_prompts(prompts)
        self.heldout = read_prompts(heldout) if heldout else self.train
        self.videos = videos
        self.has_clips = videos is not None
        if videos is not None and not Path(videos).is_dir():
            raise ValueError(f"videos folder {str(videos)!r} does not exist")
        # names the run: the same file name with other prompts (or other clips) is another run
        digest = hashlib.sha1(json.dumps([self.train, self.heldout, str(videos)]).encode()).hexdigest()[:8]
        self.name = f"prompts:{Path(prompts).name}:{digest}"

    def prompts(self, split: str = "train", count: int | None = None, seed: int | None = None) -> list[str]:
        check_split(split)
        return draw(self.train if split == "train" else self.heldout, count, seed)

    def pool(self, codec, text, *, capacity: int, seed: int, frames: int, size: int) -> ClipPool | None:
        if self.videos is None:
            return None
        return ClipFolder(self.videos, codec, text, capacity=capacity, seed=seed, frames=frames, size=size)


def source(world: str) -> DataSource:
    """The data source a plug-in registered for `world`; ValueError naming the way out."""
    plugins.load()
    if world not in SOURCES:
        known = f" (registered: {', '.join(sorted(SOURCES))})" if SOURCES else ""
        raise ValueError(f"no data source for world {world!r}{known}; give your own prompts "
                         f"(--prompts FILE, one prompt a line)")
    return SOURCES[world]()


def for_model(info, prompts: str | Path | None = None, videos: str | Path | None = None) -> DataSource:
    """The user's prompts (and clips) when given, else the source of the world the model names
    (`ModelInfo.world`); ValueError when there is neither."""
    if prompts is not None:
        return PromptFile(prompts, videos)
    if videos is not None:
        raise ValueError("--videos needs --prompts: the prompts a run draws from")
    if not info.world:
        raise ValueError(f"model {info.name!r} names no data source of its own (rushes.json 'world'); "
                         f"give your own prompts (--prompts FILE, one prompt a line)")
    return source(info.world)
