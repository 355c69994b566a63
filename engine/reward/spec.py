"""Which reward a run optimises, and the batch scorer built from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.reward import builtin
from engine.reward.custom import CustomReward, RewardError

Scorer = Callable[[list[np.ndarray], list[str]], list[float]]


@dataclass(frozen=True)
class RewardSpec:
    name: str  # a built-in name, "palette" (needs reference) or "custom" (needs file)
    reference: str | None = None  # image whose colour palette the clips should match
    file: str | None = None  # a .py file defining reward(frames, prompt) -> float
    timeout_s: float = 30.0  # custom rewards: seconds per batch before the process group is killed

    def describe(self) -> str:
        if self.name == "palette":
            return f"palette:{Path(self.reference).name}"
        if self.name == "custom":
            return f"custom:{Path(self.file).name}"
        return self.name


def load_reference(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise ValueError(f"reference image {path!r} could not be read: {err}") from None


def scorer(spec: RewardSpec) -> Scorer:
    """A batch scorer; raises ValueError naming a bad reward name, reference or file."""
    if spec.name == "ratings":
        raise ValueError("'ratings' is learnt from your ratings by the tuner, not scored per clip")
    if spec.name == "custom":
        if not spec.file:
            raise ValueError("reward 'custom' needs a reward file (--reward-file)")
        return CustomReward(spec.file, spec.timeout_s).batch
    if spec.name == "palette":
        if not spec.reference:
            raise ValueError("reward 'palette' needs a reference image (--reference)")
        fn = builtin.palette_reward(load_reference(spec.reference))
    else:
        fn = builtin.get(spec.name)

    def score(frames: list[np.ndarray], prompts: list[str]) -> list[float]:
        values = [float(fn(f, p)) for f, p in zip(frames, prompts)]
        if not all(np.isfinite(values)):
            raise RewardError(f"reward {spec.name} returned a non-finite value")
        return values

    return score


NAMES = sorted(builtin.REWARDS) + ["palette", "custom", "ratings"]
