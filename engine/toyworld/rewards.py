"""toyworld's judge as rewards, `reward(frames: uint8[T, H, W, 3], prompt) -> float`: how well a
clip shows what its caption asks for (registered as "toyworld-semantic" and "toyworld-soft" by
engine/toyworld/plugin.py). Training may climb them; MiniBench's independent reader
(eval_reader.py) is what grades the result."""

from __future__ import annotations

import numpy as np

from engine.toyworld import judge
from engine.toyworld.parse import parse_caption
from engine.toyworld.render import ClipSpec, ObjectSpec


def caption_spec(prompt: str):
    """A ClipSpec of the toyworld objects the caption asks for (what the judge scores against:
    positions and background do not enter it); None when it names none."""
    triples = parse_caption(prompt)
    if not triples:
        return None
    return ClipSpec("black", tuple(ObjectSpec(s, c, m, 0.5, 0.5, 0.1) for c, s, m in triples))


def _judged(frames: np.ndarray, prompt: str, graded: bool) -> float:
    """Mean of the judge's aspects (`judge.soft_score` when `graded`, else `judge.score`) against
    the toyworld objects the caption asks for; 0 when it names none."""
    spec = caption_spec(prompt)
    if spec is None:
        return 0.0
    return float(np.mean(list((judge.soft_score if graded else judge.score)(frames, spec).values())))


def toyworld_semantic(frames: np.ndarray, prompt: str) -> float:
    """MiniBench's judge against the caption: mean of colour, shape, motion and count accuracy."""
    return _judged(frames, prompt, graded=False)


def toyworld_soft(frames: np.ndarray, prompt: str) -> float:
    """The judge's aspects graded instead of 0/1 (`judge.soft_score`): a reward a latent reward
    model can regress, where the 0/1 judge gives it little to fit."""
    return _judged(frames, prompt, graded=True)
