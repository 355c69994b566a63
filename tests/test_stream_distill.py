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
