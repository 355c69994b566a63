"""Bake stages resume exactly after an interruption."""

import pytest
import torch

from engine import checkpoint
from engine.events import Progress
from engine.toyworld import teacher_bake, vae_bake


def _run(gen, stop_at=None):
    for event in gen:
        if stop_at and isinstance(event, Progress) and event.step == stop_at:
            gen.close()  # as a kill after the update's report, before its checkpoint (engine/loop.py's order)
            return


def test_vae_stage_resumes_to_the_same_weights(tmp_path):
    cfg = vae_bake.VaeBakeConfig(steps=4, stop_at=4, checkpoint_every=1, batch_frames=4, warmup=1)
    _run(vae_bake.train(cfg, tmp_path / "whole"))
    _run(vae_bake.train(cfg, tmp_path / "split"), stop_at=3)
    assert checkpoint.latest(tmp_path / "split")[0] == 2  # update 3 was reported, not saved: the resume redoes it
    _run(vae_bake.train(cfg, tmp_path / "split"))
    a, b = checkpoint.latest(tmp_path / "whole"), checkpoint.latest(tmp_path / "split")
    assert a[0] == b[0] == 4
    for key in a[1]["model"]:
        assert torch.allclose(a[1]["model"][key], b[1]["model"][key], atol=1e-6), key


def _teacher_resumes_exactly(cfg, tmp_path, stop_at: int) -> None:
    """A teacher run into a/ in one go and one into b/ killed after step `stop_at`'s report (so
    resumed from the checkpoint before it) end with the same EMA weights."""
    vae = vae_bake.make_vae()
    for name in ("a", "b"):
        vae.save_pretrained(tmp_path / name / "vae", safe_serialization=True)
    _run(teacher_bake.train(cfg, tmp_path / "whole", tmp_path / "a"))
    _run(teacher_bake.train(cfg, tmp_path / "split", tmp_path / "b"), stop_at=stop_at)
    _run(teacher_bake.train(cfg, tmp_path / "split", tmp_path / "b"))
    a, b = checkpoint.latest(tmp_path / "whole"), checkpoint.latest(tmp_path / "split")
    assert a[0] == b[0] == cfg.steps
    for key in a[1]["ema"]:
        assert torch.allclose(a[1]["ema"][key], b[1]["ema"][key], atol=1e-5), key


def test_teacher_stage_resumes_and_exports_a_loadable_pipeline(tmp_path):
    from engine import loading

    cfg = teacher_bake.TeacherBakeConfig(steps=2, batch=2, checkpoint_every=1, export_every=2, warmup=1,
                                         pool_capacity=16, new_clips_per_step=1)
    _teacher_resumes_exactly(cfg, tmp_path, stop_at=1)
    loaded = loading.load(str(tmp_path / "b"))
    assert loaded.info.name == "toyworld" and loaded.teacher.transformer.config.num_layers == 4
    assert teacher_bake.bake_record(tmp_path / "b")["teacher"]["step"] == 2


def test_a_curriculum_widens_the_pool_at_its_step_and_resumes_across_it(tmp_path):
    """first_motions: left/right clips before the switch, the whole world from it; a run stopped
    at the switch and resumed ends with the same weights as one that ran through it."""
    cfg = teacher_bake.TeacherBakeConfig(steps=3, batch=2, checkpoint_every=1, export_every=3, warmup=1,
                                         pool_capacity=16, new_clips_per_step=1,
                                         first_motions=("left", "right"), first_motions_until=2)
    assert [teacher_bake._motions(cfg, s) for s in range(3)] == [("left", "right")] * 2 + [None]
    _teacher_resumes_exactly(cfg, tmp_path, stop_at=2)
    with pytest.raises(ValueError, match="first_motions_until"):
        teacher_bake.TeacherBakeConfig(first_motions=("left",), first_motions_until=0)


def test_a_curriculum_pool_holds_only_its_first_motions_then_the_whole_world():
    from engine.codec import VideoCodec
    from engine.textenc import TextEncoder, load_minilm

    encoder, tokenizer = load_minilm()
    text = TextEncoder(encoder, tokenizer, max_length=8)
    codec = VideoCodec(vae_bake.make_vae().eval())
    cfg = teacher_bake.TeacherBakeConfig(pool_capacity=8, new_clips_per_step=0, first_motions=("left", "right"),
                                         first_motions_until=5)
    first, later = teacher_bake._pool(cfg, codec, text, 4), teacher_bake._pool(cfg, codec, text, 5)
    assert first.motions == ("left", "right") and later.motions is None
    assert {o.motion for j in range(8) for o in first._clip(j)[0].objects} <= {"left", "right"}


def test_a_fast_forwarded_pool_samples_only_encoded_clips():
    """Regression: skipping part of the stream once left capacity - keep empty slots that
    batches drew from (uninitialised latents), which silently ruined a resumed teacher bake."""
    import numpy as np

    from engine.codec import VideoCodec
    from engine.textenc import TextEncoder, load_minilm
    from engine.toyworld.latents import LatentPool
    from tests.conftest import tiny_vae

    text = TextEncoder(*load_minilm(), max_length=8)
    codec = VideoCodec(tiny_vae())
    skipped = LatentPool(codec, text, capacity=40, frames=3, size=16)
    skipped.fast_forward(30, keep=6, chunk=4)
    assert (skipped.size, skipped.added) == (6, 30)
    whole = LatentPool(codec, text, capacity=40, frames=3, size=16)
    whole.fast_forward(30, chunk=4)
    assert skipped.slots == list(range(24, 30))
    assert torch.allclose(skipped.latents[24:30], whole.latents[24:30], atol=1e-5)
    x0, _, captions = skipped.batch(64, np.random.default_rng(0))
    assert set(captions) <= set(whole.captions[24:30])
    assert any(torch.allclose(x, whole.latents[24:30][i], atol=1e-5) for x in x0[:1] for i in range(6))
    skipped.add(2)
    assert skipped.size == 8 and skipped.captions[30:32] == [whole._clip(30)[1], whole._clip(31)[1]]


def test_a_pool_restricted_to_some_motions_keeps_only_those_and_names_a_bad_motion():
    import pytest

    from engine.codec import VideoCodec
    from engine.textenc import TextEncoder, load_minilm
    from engine.toyworld.latents import LatentPool
    from engine.toyworld.parse import parse_caption
    from tests.conftest import tiny_vae

    text = TextEncoder(*load_minilm(), max_length=8)
    codec = VideoCodec(tiny_vae())
    pool = LatentPool(codec, text, capacity=40, frames=3, size=16, motions=("left", "right"))
    specs = [pool._clip(j)[0] for j in range(40)]
    motions = {o.motion for spec in specs for o in spec.objects}
    assert motions == {"left", "right"}
    assert {m for j in range(40) for _, _, m in parse_caption(pool._clip(j)[1])} == {"left", "right"}
    assert [pool._clip(j)[1] for j in range(5)] == [pool._clip(j)[1] for j in range(5)]  # fixed by (seed, j)
    whole = LatentPool(codec, text, capacity=40, frames=3, size=16)
    assert {o.motion for j in range(40) for o in whole._clip(j)[0].objects} > motions
    for bad in (("sideways",), ()):
        with pytest.raises(ValueError, match="motions"):
            LatentPool(codec, text, motions=bad)


def test_reversed_pairs_flip_time_and_word_the_reverse_never_a_heldout_combination():
    import re

    import numpy as np

    from engine.codec import VideoCodec
    from engine.textenc import TextEncoder, load_minilm
    from engine.toyworld import world
    from engine.toyworld.latents import LatentPool
    from engine.toyworld.parse import parse_caption
    from engine.toyworld.render import REVERSED_MOTION, reversed_clip
    from tests.conftest import tiny_vae

    text = TextEncoder(*load_minilm(), max_length=16)
    pool = LatentPool(VideoCodec(tiny_vae()), text, capacity=64, frames=3, size=16, reversed_pairs=True)
    pool.add(64)
    held = world.heldout_combos()
    opposite = {phrase: world.MOTION_WORDS[REVERSED_MOTION[m]][0][i]
                for m, (seen, _) in world.MOTION_WORDS.items() for i, phrase in enumerate(seen)}
    pattern = re.compile("|".join(sorted(map(re.escape, opposite), key=len, reverse=True)))
    for j in range(64):
        spec = pool._clip(j)[0]
        pair = pool._pair(j, spec)
        combos = [(o.colour, o.shape, o.motion) for o in reversed_clip(spec, 3).objects]
        assert pool.reversible[j] == (pair is not None) == (not set(combos) & held)
        if pair is None:
            continue
        forward, back = pair
        assert parse_caption(forward) == [(o.colour, o.shape, o.motion) for o in spec.objects]
        assert parse_caption(back) == combos
        assert torch.equal(pool.pair_states[j].float(), text.encode([forward])[0].half().float())
        assert torch.equal(pool.reversed_states[j].float(), text.encode([back])[0].half().float())
        # a minimal pair: each motion phrase swapped for its opposite's, and nothing else, gives the reverse
        assert pattern.sub(lambda m: opposite[m.group(0)], forward) == back, (forward, back)
    assert 0 < pool.reversible.sum() < 64
    x0, states = pool.pair_batch(6, np.random.default_rng(1))
    assert torch.equal(x0[3:], x0[:3].flip(2)) and states.shape[0] == 6
    rows = [next(j for j in range(64) if torch.equal(pool.latents[j], x)) for x in x0[:3]]
    assert all(pool.reversible[j] for j in rows)
    assert torch.equal(states[:3], pool.pair_states[rows].float())
    assert torch.equal(states[3:], pool.reversed_states[rows].float())
    with pytest.raises(ValueError, match="n=5"):
        pool.pair_batch(5, np.random.default_rng(1))
    pool.reversible[:] = False
    with pytest.raises(ValueError, match="none of the pool's 64 clips"):
        pool.pair_batch(6, np.random.default_rng(1))


def test_opposite_motions_have_parallel_word_lists():
    from engine.toyworld import world
    from engine.toyworld.render import REVERSED_MOTION

    seen = {m: words for m, (words, _) in world.MOTION_WORDS.items()}
    for motion, opposite in REVERSED_MOTION.items():
        for table in (seen, world.TRAIN_ONLY_WORDS["motion"]):
            assert len(table[motion]) == len(table[opposite]), (motion, opposite)
        if motion != opposite:
            assert world.MOTION_WORDS[motion][0] != world.MOTION_WORDS[opposite][0]


def test_teacher_bake_widens_a_narrow_export_to_position_channels(tmp_path):
    """A teacher exported without position channels continues as one that reads them."""
    from engine import loading
    from engine.model import position_channels

    vae = vae_bake.make_vae()
    vae.save_pretrained(tmp_path / "out" / "vae", safe_serialization=True)
    teacher_bake.export(teacher_bake.make_teacher(0), vae, tmp_path / "out", {"step": 1, "loss": 0.2})
    cfg = teacher_bake.TeacherBakeConfig(steps=2, batch=2, checkpoint_every=1, export_every=2, warmup=1,
                                         pool_capacity=16, new_clips_per_step=1, restarts=(1,))
    _run(teacher_bake.train(cfg, tmp_path / "work", tmp_path / "out"))
    assert checkpoint.latest(tmp_path / "work")[0] == 2
    teacher = loading.load(str(tmp_path / "out")).teacher.transformer
    assert position_channels(teacher) == 3 and teacher.config.in_channels == 19
    assert teacher_bake.bake_record(tmp_path / "out")["teacher"]["step"] == 2


def test_teacher_lr_restarts_warm_up_again_and_each_segment_ends_at_the_next():
    """Before the first restart the LR follows `first_steps`; each restart warms up from the
    start again, and a segment decays to the floor just before the next restart (or `steps`)."""
    cfg = teacher_bake.TeacherBakeConfig(steps=300, first_steps=150, restarts=(100, 200), warmup=10,
                                         lr=1.0, min_lr=0.1)
    lr = [teacher_bake._lr(cfg, s) for s in range(cfg.steps)]
    assert lr[0] == lr[100] == lr[200] == 0.1  # warm-up step 1 of 10 of a peak of 1.0
    assert lr[9] == lr[109] == lr[209] == 1.0
    assert lr[99] > 0.1 + 1e-3  # the first schedule is 150 steps long: cut off before its floor
    assert abs(lr[199] - 0.1) < 1e-3 and abs(lr[299] - 0.1) < 1e-3
    assert lr[150] == lr[250]  # the second and third segments are the same length


def test_the_default_teacher_batch_draws_in_the_shipped_teachers_order():
    """Batch, caption-dropout mask, levels, noise: the stream the shipped teacher was trained on."""
    import numpy as np

    from engine.distill.flow_matching import sample_levels

    class Pool:
        def batch(self, n, rng):
            seed = int(rng.integers(1000))
            return torch.randn(n, 2, 3, 2, 2, generator=torch.Generator().manual_seed(seed)), torch.zeros(n, 4, 5), []

    cfg = teacher_bake.TeacherBakeConfig()
    x0, _, drop, sigma, eps = teacher_bake._batch(cfg, Pool(), 5, torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    want_x0, _, _ = Pool().batch(cfg.batch, np.random.default_rng([cfg.seed, 5]))
    want_drop = torch.rand(cfg.batch, generator=gen) < cfg.caption_dropout
    want_sigma = sample_levels(cfg.batch, teacher_bake.TOYWORLD_INFO.shift, gen)
    want_eps = torch.randn(want_x0.shape, generator=gen)
    assert torch.equal(x0, want_x0) and torch.equal(drop, want_drop)
    assert torch.equal(sigma, want_sigma) and torch.equal(eps, want_eps)


def test_teacher_bake_widens_an_export_with_position_channels_to_frame_context(tmp_path):
    """The shipped kind of export (positions, no context) continues as a frame-context teacher."""
    from engine import loading
    from engine.model import frame_context, position_channels

    vae = vae_bake.make_vae()
    vae.save_pretrained(tmp_path / "out" / "vae", safe_serialization=True)
    teacher_bake.export(teacher_bake.make_teacher(3), vae, tmp_path / "out", {"step": 1, "loss": 0.2})
    cfg = teacher_bake.TeacherBakeConfig(steps=2, batch=2, checkpoint_every=1, export_every=2, warmup=1,
                                         pool_capacity=16, new_clips_per_step=1, restarts=(1,), frame_context=2)
    _run(teacher_bake.train(cfg, tmp_path / "work", tmp_path / "out"))
    teacher = loading.load(str(tmp_path / "out")).teacher.transformer
    assert position_channels(teacher) == 3 and frame_context(teacher) == 2
    assert teacher.config.in_channels == 16 + 3 + 2 * 2 * 16
