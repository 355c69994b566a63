"""The independent reader reads the renderer right, catches what a model gets wrong, and is
written apart from the judge (no training code reaches it: tests/test_layout.py)."""

from dataclasses import replace

import numpy as np

from engine.toyworld import eval_reader, minibench
from engine.toyworld.render import ClipSpec, ObjectSpec, render, reversed_clip, sample_clip

ASPECTS = ("colour", "shape", "motion", "count")


def test_it_reads_every_renderer_clip_right():
    for split in ("public-eval", "public-heldout"):
        for i in range(60):
            spec, _ = sample_clip(split, i)
            scores = eval_reader.score(render(spec), spec)
            assert {k: scores[k] for k in ASPECTS} == dict.fromkeys(ASPECTS, 1.0), (split, i, spec)
            assert scores["opposite"] == 0


def test_a_clip_played_backwards_reads_as_the_opposite_motion():
    for motion, opposite in eval_reader.DIRECTED.items():
        spec = ClipSpec("navy", (ObjectSpec("circle", "red", motion, 0.5, 0.5, 0.12),))
        if motion in ("left", "up"):
            spec = ClipSpec("navy", (replace(spec.objects[0], **{"x" if motion == "left" else "y": 0.7}),))
        backwards = render(spec)[::-1]
        scores = eval_reader.score(backwards, spec)
        assert (scores["motion"], scores["directed"], scores["opposite"]) == (0.0, 1, 1), motion
        assert eval_reader.read(backwards)[0][0].motion == opposite


def test_blank_frozen_vanishing_split_and_recoloured_clips_lose_their_aspects():
    obj = ObjectSpec("square", "orange", "right", 0.3, 0.5, 0.12)
    spec = ClipSpec("black", (obj,))
    clip = render(spec)
    assert eval_reader.score(np.zeros_like(clip), spec)["colour"] == 0.0
    frozen = np.repeat(clip[:1], len(clip), axis=0)
    assert eval_reader.read(frozen)[0][0].motion == "still"
    vanishing = clip.copy()
    vanishing[6:] = 0  # gone after frame 5: still one object in the first frames, none after
    assert eval_reader.score(vanishing, spec)["count"] == 0.0
    split = clip.copy()
    split[:, :, 30:34] = 0  # a black bar through the middle cuts the square in two as it passes
    assert eval_reader.score(render(ClipSpec("black", (replace(obj, motion="still", x=0.5),))), spec)["count"] == 1.0
    assert eval_reader.score(np.where(np.arange(64)[None, None, :, None] // 2 % 2 == 0, clip, 0).astype(np.uint8),
                             spec)["count"] == 0.0  # every other column gone: shreds
    purple = render(ClipSpec("black", (replace(obj, colour="purple"),)))
    assert eval_reader.score(purple, spec)["colour"] == 0.0
    triangle = render(ClipSpec("black", (replace(obj, shape="triangle"),)))
    assert eval_reader.score(triangle, spec)["shape"] == 0.0


def test_two_touching_objects_of_two_colours_are_two_objects():
    a = ObjectSpec("square", "red", "still", 0.4, 0.5, 0.12)
    b = ObjectSpec("circle", "cyan", "still", 0.4 + 0.2, 0.5, 0.12)  # overlapping a little
    objects, per_frame = eval_reader.read(render(ClipSpec("charcoal", (a, b))))
    assert sorted(o.colour for o in objects) == ["cyan", "red"] and set(per_frame) == {2}


def test_minibench_reports_a_second_reader_beside_the_judge():
    # seed 0 is the split's own clip (other seeds redraw positions, and objects may then overlap)
    report = minibench.evaluate(None, "public-eval", prompts=4, seeds=1, readers={"independent": eval_reader.score})
    mine = report["readers"]["independent"]
    assert mine["semantic"] == 1.0 and mine["opposite"] == 0.0 and len(mine["semantic_per_prompt"]) == 4
    assert set(mine["semantic_parts"]) == set(ASPECTS)
    assert report["opposite"] == 0.0 and report["directed"] > 0
    assert minibench.evaluate(None, "public-eval", prompts=2, seeds=1)["readers"] == {}


def test_reversed_clip_spec_and_backwards_frames_agree_for_the_reader():
    spec, _ = sample_clip("public-eval", 3)
    back = reversed_clip(spec)
    assert eval_reader.score(render(spec)[::-1], back)["motion"] == 1.0
