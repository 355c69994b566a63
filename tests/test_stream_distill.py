"""The causal student's distillation (engine/stream/trainer.py, config.py): Re-DMD's weights, the
two phases with resume and every rollout option, and bad settings refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_re_dmd_weights_keep_mean_one_and_beta_zero_is_plain_dmd():
    from engine.distill.vsd import reward_weights, vsd_loss

    r = torch.tensor([0.1, 0.9, 0.5])
    assert torch.allclose(reward_weights(r, 0.0), torch.ones(3))
    w = reward_weights(r, 4.0)
    assert abs(float(w.mean()) - 1) < 1e-6 and w[1] > w[2] > w[0]
    g = torch.Generator().manual_seed(0)
    x, real, fake = (torch.randn(3, 2, 2, 2, 2, generator=g) for _ in range(3))
    plain, _ = vsd_loss(x, real, fake)
    same, _ = vsd_loss(x, real, fake, torch.ones(3))
    torch.testing.assert_close(plain, same)


def test_a_causal_student_distils_in_two_phases_and_resumes(tiny_folder):
    from engine import checkpoint, loading
    from engine.events import Progress, Result
    from engine.stream.config import CausalConfig
    from engine.stream.trainer import train
    from tests.conftest import TOYWORLD

    loaded = loading.load(str(tiny_folder))
    cfg = CausalConfig(chunk=1, sink=1, recent=1, student_steps=2, ode_steps=2, dmd_steps=2, batch=2, pairs=4,
                       pair_steps=2, fake_updates=1, checkpoint_every=2, reward="brightness", reward_beta=2.0)
    work = tiny_folder.parent / "causal-run"
    start = {k: v.clone() for k, v in loaded.student(2)[0].transformer.state_dict().items()}
    events = list(train(cfg, loaded, work, TOYWORLD, init_student=2))
    assert isinstance(events[-1], Result), events[-1]
    phases = [(e.stage, e.step) for e in events if isinstance(e, Progress) and e.stage in ("ode", "dmd")]
    assert phases == [("ode", 1), ("ode", 2), ("dmd", 1), ("dmd", 2)]
    logs = [e.metrics for e in events if isinstance(e, Progress) and e.stage == "dmd"]
    assert all("vsd_loss" in m and "reward" in m for m in logs)
    trained = events[-1].value.network.state_dict()
    assert any((trained[k] - start[k].float()).abs().max() > 0 for k in start)
    assert checkpoint.latest(work)[0] == 4
    # the next update on a switching rollout past a retimed window (every such option in one update)
    more = list(train(CausalConfig(**cfg.to_dict() | {"dmd_steps": 3, "switch_share": 1.0, "retime": True,
                                                       "rollout_chunks": 5}), loaded, work, TOYWORLD, init_student=2))
    assert [(e.stage, e.step) for e in more if isinstance(e, Progress) and e.stage == "dmd"] == [("dmd", 3)]
    assert isinstance(more[-1], Result) and np.isfinite(more[-2].metrics["vsd_loss"])
    assert checkpoint.latest(work)[0] == 5


@pytest.mark.parametrize("settings, match", [({"chunk": 0}, "window chunk"), ({"ode_steps": 0, "dmd_steps": 0},
                                              "at least one update"), ({"reward": "nope"}, "unknown reward 'nope'"),
                                             ({"rollout_chunks": 3}, "0 \\(one window\\) or at least the window's 4 slots .*got 3")])
def test_bad_causal_settings_are_refused_naming_them(settings, match):
    from engine.stream.config import CausalConfig

    with pytest.raises(ValueError, match=match):
        CausalConfig(**settings)


def _tiny_causal(window):
    from engine.stream.causal import CausalWan
    from tests.conftest import tiny_transformer

    return CausalWan(tiny_transformer(), window)


def test_the_continuation_term_sees_the_past_a_stream_would_and_nothing_after():
    from engine.stream.cache import Window
    from engine.stream.continuation import continuation_loss

    causal = _tiny_causal(Window(chunk=1, sink=1, recent=1))
    g = torch.Generator().manual_seed(0)
    clips, text = torch.randn(2, 4, 6, 4, 4, generator=g), torch.randn(2, 3, 384, generator=g)

    def loss(x, at=3):
        value, logs = continuation_loss(causal, x, text, at, 0.5, torch.Generator().manual_seed(1))
        assert logs["continuation_chunk"] == at
        return value

    base = loss(clips)
    later = clips.clone()
    later[:, :, 4:] += 1.0  # the chunks after the one being fitted
    torch.testing.assert_close(loss(later), base)
    for changed in (0, 2):  # the sink, and the recent chunk in view
        past = clips.clone()
        past[:, :, changed] += 1.0
        assert (loss(past) - base).abs() > 1e-6, changed
    rolled = clips.clone()
    rolled[:, :, 1] += 1.0  # left the window, but its keys shaped the recent chunk's (made over it)
    assert (loss(rolled) - base).abs() > 1e-6
    base.backward()
    assert all(p.grad is not None for p in causal.network.proj_out.parameters())
    for at in (0, 6):
        with pytest.raises(ValueError, match=f"chunk 1 to 5 of a 6-chunk clip, got {at}"):
            loss(clips, at)


def test_a_toyworld_pool_longer_than_a_clip_holds_the_worlds_long_clips():
    from engine.toyworld.latents import LatentPool
    from engine.toyworld.render import render, render_long, sample_clip

    spec, _ = sample_clip("train", 3)
    long = LatentPool(None, None, frames=40, size=16)
    np.testing.assert_array_equal(long.render(spec), render_long(spec, 40, 16))
    np.testing.assert_array_equal(LatentPool(None, None, frames=17, size=16).render(spec), render(spec, 17, 16))
    with pytest.raises(ValueError, match="reversed pairs need clips of at most 17 frames, got frames=40"):
        LatentPool(None, None, frames=40, reversed_pairs=True)


def test_a_causal_distillation_with_the_continuation_term_fits_long_clips(tiny_folder):
    from engine import loading
    from engine.data import PromptFile
    from engine.events import Progress, Result
    from engine.stream.config import CausalConfig
    from engine.stream.trainer import train
    from tests.conftest import TOYWORLD, TRAIN_PROMPTS

    loaded = loading.load(str(tiny_folder))
    cfg = CausalConfig(chunk=1, sink=1, recent=1, student_steps=2, ode_steps=0, dmd_steps=2, batch=2,
                       fake_updates=1, continuation_weight=1.0, continuation_chunks=5, continuation_clips=4)
    events = list(train(cfg, loaded, tiny_folder.parent / "causal-long", TOYWORLD, init_student=2))
    assert isinstance(events[-1], Result), events[-1]
    logs = [e.metrics for e in events if isinstance(e, Progress) and e.stage == "dmd"]
    assert len(logs) == 2 and all(np.isfinite(m["continuation_loss"]) and 1 <= m["continuation_chunk"] <= 4
                                  for m in logs)
    assert events[-1].value.long_pool.latents.shape[2] >= 5
    listed = tiny_folder.parent / "causal-prompts.txt"
    listed.write_text("\n".join(TRAIN_PROMPTS))
    prompts_only = PromptFile(listed)
    with pytest.raises(ValueError, match="continuation_weight 1.0, continuation_steps 0\\) needs real clips"):
        list(train(cfg, loaded, tiny_folder.parent / "causal-none", prompts_only, init_student=2))


def test_a_continuation_phase_alone_runs_between_the_ode_and_dmd_phases_without_the_teacher(tiny_folder):
    from engine import loading
    from engine.events import Progress, Result
    from engine.stream.config import CausalConfig
    from engine.stream.trainer import train
    from tests.conftest import TOYWORLD

    loaded = loading.load(str(tiny_folder))
    cfg = CausalConfig(chunk=1, sink=1, recent=1, student_steps=2, ode_steps=0, continuation_steps=3, dmd_steps=1,
                       batch=2, fake_updates=1, continuation_chunks=5, continuation_clips=4, checkpoint_every=1)
    assert cfg.steps == 4
    work = tiny_folder.parent / "causal-alone"
    events = list(train(cfg, loaded, work, TOYWORLD, init_student=2, should_stop=lambda: False))
    assert isinstance(events[-1], Result), events[-1]
    trainer = events[-1].value
    stages = [(e.stage, e.step, e.total) for e in events if isinstance(e, Progress) and e.stage != "pairs"]
    assert stages == [("continuation", 1, 3), ("continuation", 2, 3), ("continuation", 3, 3), ("dmd", 1, 1)]
    alone = [e.metrics for e in events if isinstance(e, Progress) and e.stage == "continuation"]
    dmd_logs = [e.metrics for e in events if isinstance(e, Progress) and e.stage == "dmd"]
    # the phase alone is the term alone: no teacher or fake score terms; the DMD phase (weight 0) has no term
    assert all("vsd_loss" not in m and m["student_loss"] == pytest.approx(m["continuation_loss"]) for m in alone)
    assert "continuation_loss" not in dmd_logs[0] and np.isfinite(dmd_logs[0]["vsd_loss"])
    # one long clip joined the pool per update of the phase, none in the DMD phase; a resumed run refills it so
    assert trainer.long_pool.added == 4 + 3 and trainer._clips_added(4) == 3
    # a longer DMD phase resumes past the phase alone: nothing left uses the pool, so it is not refilled
    longer = list(train(CausalConfig(**cfg.to_dict() | {"dmd_steps": 2}), loaded, work, TOYWORLD, init_student=2))
    assert isinstance(longer[-1], Result) and longer[-1].value.step == 5 and longer[-1].value.long_pool.added == 0
