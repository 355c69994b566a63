"""Which reward a run optimises, and the batch scorer built from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import plugins
from engine.reward import builtin, models
from engine.reward.custom import CustomReward, RewardError

Scorer = Callable[[list[np.ndarray], list[str]], list[float]]


@dataclass(frozen=True)
class RewardSpec:
    name: str  # a built-in name, "palette" (needs reference), "custom" (needs file) or a model reward
    reference: str | None = None  # image whose colour palette the clips should match
    file: str | None = None  # a .py file defining reward(frames, prompt) -> float
    model: str | None = None  # model rewards: weights folder (default $RUSHES_HOME/reward-models/<name>)
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
    if spec.name in models.MODEL_REWARDS:
        return _finite(spec.name, models.load(spec.name, spec.model))
    if spec.name == "palette":
        if not spec.reference:
            raise ValueError("reward 'palette' needs a reference image (--reference)")
        fn = builtin.palette_reward(load_reference(spec.reference))
    else:
        fn = builtin.get(spec.name)

    return _finite(spec.name, lambda frames, prompts: [float(fn(f, p)) for f, p in zip(frames, prompts)])


def _finite(name: str, batch: Scorer) -> Scorer:
    def score(frames: list[np.ndarray], prompts: list[str]) -> list[float]:
        values = batch(frames, prompts)
        if not all(np.isfinite(values)):
            raise RewardError(f"reward {name} returned a non-finite value")
        return values

    return score


def names() -> list[str]:
    """Every reward a run can name: the built-ins and the plug-ins' (engine/plugins.py), then the
    kinds that need more (a reference, a file, ratings, model weights)."""
    plugins.load()
    return sorted(builtin.REWARDS) + ["palette", "custom", "ratings", *models.MODEL_REWARDS]
