"""The model that ships (assets/toyworld) loads through the engine and makes sane clips: the
right size, a dark background, the asked colour on screen, students and teacher alike."""

import numpy as np
import pytest

from engine.events import Result
from engine.generate import Engine
from engine.requests import GenerateRequest
from engine.toyworld import world

PROMPT = "a red circle moving right on a black background"


@pytest.fixture(scope="module")
def engine():
    return Engine()


def _near(frames: np.ndarray, rgb, within: float = 60.0) -> np.ndarray:
    """Per frame, the share of pixels within `within` sRGB units of `rgb`."""
    d = np.linalg.norm(frames.astype(np.float32) - np.asarray(rgb, np.float32), axis=-1)
    return (d < within).mean(axis=(1, 2))


@pytest.mark.parametrize("role, steps", [("student", 1), ("student", 2), ("student", 4), ("teacher", 20)])
def test_the_shipped_model_draws_the_asked_colour_on_its_background(engine, role, steps):
    shares = []
    for seed in (0, 1):
        events = list(engine.generate(GenerateRequest(prompt=PROMPT, model="toyworld", role=role, steps=steps,
                                                      seed=seed)))
        assert isinstance(events[-1], Result), events[-1]
        frames = events[-1].value.frames
        assert frames.shape == (17, 64, 64, 3) and frames.dtype == np.uint8
        assert frames.std() > 10  # not a flat or blank clip
        border = np.concatenate([frames[:, :2].reshape(17, -1, 3), frames[:, -2:].reshape(17, -1, 3)], axis=1)
        assert _near(border[:, :, None], world.BACKGROUNDS["black"], 40).mean() > 0.8  # a black background
        shares.append(_near(frames, world.COLOURS["red"]).mean())
    assert max(shares) > 0.01, shares  # the red object covers at least ~40 pixels a frame in one of two seeds


def test_the_shipped_model_streams_the_asked_colour_for_longer_than_its_window():
    from engine import loading
    from engine.requests import StreamRequest
    from engine.stream.play import play, summary

    loaded = loading.load("toyworld")
    assert loaded.stream is not None, "assets/toyworld ships a causal student (rushes bake toyworld --stage stream)"
    chunks = list(play(loaded, StreamRequest(prompt=PROMPT, seconds=6, seed=0)))
    frames = np.concatenate([c.frames for c in chunks])
    assert frames.shape == (48, 64, 64, 3) and summary(chunks, loaded.info.fps)["frames"] == 48
    late = frames[-17:]  # past the window (16 latent frames): made over a rolled cache
    assert late.std() > 10 and _near(late, world.COLOURS["red"]).mean() > 0.005
