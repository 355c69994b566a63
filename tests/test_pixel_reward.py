"""The differentiable pixel reward (engine/reward/pixel.py): the judge's colour reading, smooth."""

import numpy as np
import pytest
import torch

from engine.reward import pixel
from engine.toyworld import judge, pixel_rewards, world
from engine.toyworld.render import render, sample_clip


def _pixels(clip: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(clip).float().permute(3, 0, 1, 2)[None] / 127.5 - 1  # [1, 3, T, H, W]


def test_it_reads_colour_as_the_judge_grades_it():
    for i in range(4):
        spec, caption = sample_clip("public-eval", i)
        clip = render(spec)
        assert float(pixel_rewards.toyworld_colour(_pixels(clip), [caption])[0]) == pytest.approx(1.0, abs=1e-3)
        # the object shown in only the first 5 of 17 frames, the background elsewhere
        part = clip.copy()
        part[5:] = np.array(world.BACKGROUNDS[spec.background], np.uint8)
        soft = judge.soft_score(part, spec)["colour"]
        assert soft < 0.5
        assert float(pixel_rewards.toyworld_colour(_pixels(part), [caption])[0]) == pytest.approx(soft, abs=0.02)


def test_coverage_counts_pixels_of_the_colour_and_gates_far_ones():
    red = list(world.COLOURS).index("red")
    frames = torch.full((1, 3, 2, 8, 8), -1.0)  # black
    frames[0, :, 0, :2, :] = torch.tensor(world.COLOURS["red"]).float()[:, None, None] / 127.5 - 1  # 16 red pixels
    frames[0, :, 1, 0, 0] = torch.tensor([0.0, 1.0, -1.0])  # one pixel far from every palette entry
    cov = pixel_rewards.coverage(frames)
    assert cov.shape == (1, len(judge.PALETTE), 2)
    assert float(cov[0, red, 0]) == pytest.approx(16, abs=0.1) and float(cov[0, red, 1]) < 1e-3
    assert float(cov[0, :, 1].sum()) == pytest.approx(63, abs=0.3)  # the far pixel counts for nothing


def test_colour_count_reward_docks_extra_objects_and_ignores_fringes():
    spec, caption = next((s, c) for s, c in (sample_clip("public-eval", i) for i in range(40)) if len(s.objects) == 1)
    clip = render(spec)
    assert float(pixel_rewards.toyworld_colour_count(_pixels(clip), [caption])[0]) == pytest.approx(1.0, abs=0.03)
    other = next(c for c in world.COLOURS if c != spec.objects[0].colour)
    extra, fringe = clip.copy(), clip.copy()
    extra[:, -8:, -8:] = world.COLOURS[other]  # a second 64-pixel object in every frame
    fringe[:, -2:, -2:] = world.COLOURS[other]  # 4 pixels: under MIN_AREA, the judge ignores them
    assert judge.soft_score(extra, spec)["count"] == 0.0 and judge.soft_score(fringe, spec)["count"] == 1.0
    assert float(pixel_rewards.toyworld_colour_count(_pixels(extra), [caption])[0]) == pytest.approx(0.5, abs=0.03)
    assert float(pixel_rewards.toyworld_colour_count(_pixels(fringe), [caption])[0]) == pytest.approx(1.0, abs=0.03)


def test_gradient_moves_an_off_colour_object_toward_the_asked_one():
    spec, caption = sample_clip("public-eval", 0)
    colour = np.array(world.COLOURS[spec.objects[0].colour], np.float32)
    clip = render(spec).astype(np.float32)
    mask = np.abs(clip - colour).sum(-1) < 1  # the object's pixels
    dimmed = clip.copy()
    dimmed[mask] = colour * 0.55 + np.array(world.BACKGROUNDS[spec.background], np.float32) * 0.45
    x = _pixels(dimmed.astype(np.uint8)).requires_grad_(True)
    before = pixel_rewards.toyworld_colour(x, [caption])
    (-before.sum()).backward()
    assert x.grad.abs().sum() > 0
    with torch.no_grad():
        after = pixel_rewards.toyworld_colour(x - 0.5 * x.grad / x.grad.abs().max(), [caption])
    assert float(after[0]) > float(before.detach()[0])


def test_captions_without_objects_score_zero_and_bad_input_is_named():
    x = torch.zeros(2, 3, 3, 8, 8, requires_grad=True)
    for reward in map(pixel.get, ("toyworld-colour", "toyworld-colour-count")):  # as the plug-in registers them
        assert reward(x, ["a landscape", "nothing here"]).tolist() == [0.0, 0.0]
        with pytest.raises(ValueError, match=r"\(2, 3, 3, 8, 8\) and 1 captions"):
            reward(x, ["one"])
    with pytest.raises(ValueError, match="'sparkle'"):
        pixel.get("sparkle")


def test_the_loss_is_minus_the_mean_reward():
    loss, logs = pixel.pixel_reward_loss(torch.tensor([0.25, 0.75]))
    assert float(loss) == -0.5 and logs == {"px_loss": -0.5, "px_reward": 0.5}
