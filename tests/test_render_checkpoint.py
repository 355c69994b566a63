import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine import checkpoint
from engine.toyworld import world
from engine.toyworld.render import render, reversed_clip, sample_clip


def test_clips_are_deterministic_and_use_the_palette():
    spec, caption = sample_clip("train", 11)
    assert sample_clip("train", 11) == (spec, caption)
    video = render(spec)
    assert video.shape == (17, 64, 64, 3) and video.dtype == np.uint8
    colours = {tuple(c) for c in video.reshape(-1, 3)}
    assert world.COLOURS[spec.objects[0].colour] in colours
    assert world.BACKGROUNDS[spec.background] in colours


def test_heldout_combinations_never_in_train():
    held = world.heldout_combos()
    assert 0 < len(held) < len(world.all_combos()) // 4
    for i in range(300):
        spec, _ = sample_clip("train", i)
        assert all((o.colour, o.shape, o.motion) not in held for o in spec.objects)
    spec, _ = sample_clip("public-heldout", 0)
    assert (spec.objects[0].colour, spec.objects[0].shape, spec.objects[0].motion) in held


def test_train_only_words_stay_in_train_and_never_touch_a_heldout_word():
    tables = {"colour": world.COLOUR_WORDS, "shape": world.SHAPE_WORDS, "motion": world.MOTION_WORDS}
    heldout = {w for table in tables.values() for _, unseen in table.values() for w in unseen}
    extra = {w for aspect in tables for words in world.TRAIN_ONLY_WORDS[aspect].values() for w in words}
    seen_tokens = {t for table in tables.values() for seen, _ in table.values() for w in seen for t in w.split()}
    held_tokens = {t for w in heldout for t in w.split()} - seen_tokens
    for word in extra:  # no held-out paraphrase, nor a token only the held-out ones use, leaks into training
        assert not any(h in word for h in held_tokens), word
    for aspect, table in tables.items():
        assert set(world.TRAIN_ONLY_WORDS[aspect]) == set(table)
    found = set()
    for i in range(400):
        assert sample_clip("train", i)[1] == sample_clip("train", i, train_words=False)[1]
        _, train_caption = sample_clip("train", i, train_words=True)
        found |= {w for w in extra if f" {w} " in f" {train_caption.replace(',', ' ')} "}
        assert not any(f" {w} " in f" {train_caption.replace(',', ' ')} " for w in heldout), train_caption
        for split in ("public-eval", "public-heldout"):
            _, caption = sample_clip(split, i, train_words=True)
            assert not any(f" {w} " in f" {caption.replace(',', ' ')} " for w in extra), caption
    assert len(found) > len(extra) // 2  # the training captions do use them


def test_captions_with_train_only_words_parse_back():
    from engine.toyworld.parse import parse_caption

    text = "a video of a ruby orb gliding to the left and a teal cube getting larger on a grey backdrop"
    assert parse_caption(text) == [("red", "circle", "left"), ("cyan", "square", "grow")]
    for i in range(200):
        spec, caption = sample_clip("train", i, train_words=True)
        assert parse_caption(caption) == [(o.colour, o.shape, o.motion) for o in spec.objects], caption


def test_motion_moves_the_object_the_right_way():
    for i in range(60):
        spec, caption = sample_clip("public-eval", i)
        obj = spec.objects[0]
        if len(spec.objects) == 1 and obj.motion in ("left", "right"):
            video = render(spec).astype(int)
            mask = np.abs(video - np.array(world.BACKGROUNDS[spec.background])).sum(-1) > 30
            xs = [np.nonzero(m)[1].mean() for m in (mask[0], mask[-1])]
            assert (xs[1] < xs[0]) == (obj.motion == "left"), caption
            return
    raise AssertionError("no single left/right clip in the first 60")


def test_a_reversed_clip_renders_the_clip_backwards_with_opposite_motions():
    opposite = {("left", "right"), ("up", "down"), ("grow", "shrink"), ("bounce", "bounce"), ("still", "still")}
    for i in range(40):
        spec, _ = sample_clip("train", i)
        back = reversed_clip(spec)
        assert np.abs(render(back).astype(int) - render(spec)[::-1].astype(int)).max() <= 1, spec
        for a, b in zip(spec.objects, back.objects):
            assert (a.motion, b.motion) in opposite | {(y, x) for x, y in opposite}
            assert (a.colour, a.shape, a.radius) == (b.colour, b.shape, b.radius)
        assert reversed_clip(back) == spec or np.abs(render(reversed_clip(back)).astype(int)
                                                     - render(spec).astype(int)).max() <= 1


def test_checkpoint_round_trip_and_partial_ignored(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    checkpoint.save(tmp_path, 5, {"model": model.state_dict(), "opt": opt.state_dict()}, {"loss": 1.5})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / f".tmp-step-0000009-{dead.pid}"  # a save whose writer is gone
    killed.mkdir()
    (tmp_path / "step-0000010").mkdir()  # renamed but never marked complete
    step, state, info = checkpoint.latest(tmp_path)
    assert step == 5 and info == {"loss": 1.5}
    assert not killed.exists()
    restored = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), 1e-3)
    restored.load_state_dict(state["opt"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_a_reader_leaves_a_live_writers_temp_folder_alone(tmp_path):
    """Polling `latest` while another process saves must not delete the folder it is writing."""
    writing = tmp_path / f".tmp-step-0000004-{os.getpid()}"
    writing.mkdir()
    (writing / "state.safetensors").write_bytes(b"half")
    assert checkpoint.latest(tmp_path) is None
    assert (writing / "state.safetensors").read_bytes() == b"half"
    checkpoint.save(tmp_path, 4, {"x": torch.ones(2)})  # the writer finishes and renames it
    assert checkpoint.latest(tmp_path)[0] == 4 and not writing.exists()


def test_empty_dicts_survive_a_checkpoint(tmp_path):
    """An optimizer that has not stepped yet has state == {}; it must load back as {}."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    checkpoint.save(tmp_path, 1, {"opt": opt.state_dict(), "nested": {"a": {}, "b": [{}, {"c": 1}]}})
    _, state, _ = checkpoint.latest(tmp_path)
    assert state["opt"]["state"] == {} and state["nested"] == {"a": {}, "b": [{}, {"c": 1}]}
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))]).load_state_dict(state["opt"])


def test_a_long_clip_continues_each_motion_past_one_clip():
    from engine.toyworld import judge
    from engine.toyworld.render import CLIP_FRAMES, ClipSpec, ObjectSpec, render, render_long

    spec = ClipSpec("black", (ObjectSpec("circle", "red", "left", 0.5, 0.5, 0.12),
                              ObjectSpec("square", "blue", "grow", 0.5, 0.2, 0.1)))
    long = render_long(spec, 5 * CLIP_FRAMES)
    np.testing.assert_array_equal(long[:CLIP_FRAMES], render(spec))
    red = judge.assign(long) == list(judge.world.COLOURS).index("red")
    columns = [np.nonzero(m.any(0))[0] for m in red]
    centres = [c.mean() if len(c) else None for c in columns]
    gone = [t for t, c in enumerate(centres) if c is None]
    assert gone, "the mover never leaves the frame"
    back = next(t for t in range(gone[-1], len(centres)) if centres[t] is not None)
    assert centres[back] > 48  # it comes back in by the right edge
    assert all(centres[t + 1] < centres[t] for t in range(back, len(centres) - 1) if centres[t + 1] is not None)
    blue = (judge.assign(long) == list(judge.world.COLOURS).index("blue")).reshape(len(long), -1).sum(1)
    np.testing.assert_array_equal(blue[CLIP_FRAMES:2 * CLIP_FRAMES], blue[:CLIP_FRAMES])  # grow repeats its clip
    assert blue[CLIP_FRAMES - 1] > 4 * blue[0]
    with pytest.raises(ValueError, match="at least one frame, got 0"):
        render_long(spec, 0)
