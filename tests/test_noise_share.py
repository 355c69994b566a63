"""Frame-shared starting noise (engine.sampling.frame_shared_noise): the mixing function, the
distillation knob that trains a student on it, the rushes.json entry that carries it, and the
samplers (studio, reward tuning) that draw a student's noise from that entry."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from conftest import TOYWORLD, TRAIN_PROMPTS, tiny_transformer, tiny_vae
from engine import loading
from engine.distill.config import DistillConfig
from engine.distill.export import add_student, add_student_lora
from engine.distill.trainer import DollarTrainer
from engine.events import Result
from engine.folder import ModelInfo, write_pipeline
from engine.generate import Engine
from engine.requests import GenerateRequest
from engine.sampling import frame_shared_noise, noise_like


def _frames_equal(x: torch.Tensor) -> bool:
    """Every frame (axis 2) of x [B, C, T, h, w] equals the first."""
    return torch.equal(x, x[:, :, :1].expand_as(x))


def test_share_zero_is_the_noise_itself_and_draws_nothing():
    """Students without the knob keep their clips for a seed: nothing is drawn at share 0."""
    gen, fresh = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    noise = torch.randn(2, 3, 5, 4, 4)
    assert frame_shared_noise(noise, 0.0, gen) is noise
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=fresh))


def test_frames_correlate_by_the_share_and_keep_unit_variance():
    noise = torch.randn(64, 4, 6, 8, 8, generator=torch.Generator().manual_seed(1))
    for share in (0.5, 0.9):
        mixed = frame_shared_noise(noise, share, torch.Generator().manual_seed(2))
        corr = torch.corrcoef(torch.stack([mixed[:, :, 0].flatten(), mixed[:, :, 3].flatten()]))[0, 1]
        assert corr.item() == pytest.approx(share, abs=0.03)
        assert mixed.var().item() == pytest.approx(1.0, abs=0.03)
    assert _frames_equal(frame_shared_noise(noise, 1.0, torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_a_share_outside_zero_one_is_refused_by_value(bad):
    with pytest.raises(ValueError, match=str(bad)):
        frame_shared_noise(torch.zeros(1, 1, 2, 1, 1), bad, torch.Generator())
    with pytest.raises(ValueError, match=f"noise_frame_share must be a number in \\[0, 1\\], got {bad}"):
        DistillConfig(noise_frame_share=bad)


def test_the_knob_keys_a_run_folder_only_when_it_is_on():
    """Runs made before the knob existed keep their folders (and resume) at share 0."""
    from engine.distill.run import run_dir

    assert "noise_frame_share" not in DistillConfig().run_settings()
    assert DistillConfig(noise_frame_share=0.9).run_settings()["noise_frame_share"] == 0.9
    assert run_dir(DistillConfig(), "m") != run_dir(DistillConfig(noise_frame_share=0.9), "m")


def test_the_one_step_generator_trains_from_frame_shared_noise(tmp_path):
    folder = write_pipeline(tmp_path / "tiny", tiny_transformer(), tiny_vae(),
                            FlowMatchEulerDiscreteScheduler(shift=3.0), ModelInfo(name="tiny"))
    loaded = loading.load(str(folder))
    real = torch.randn(2, *loaded.codec.latent_shape(3, 32, 32))
    text = loaded.text.encode(["a ball", "a box"])

    def first_input(**kw):
        trainer = DollarTrainer(DistillConfig(student_steps=1, batch=2, frames=3, size=32, **kw), loaded, tmp_path, TOYWORLD)
        x_t, sigma, k = trainer._generator_input(real, text, torch.Generator().manual_seed(0))
        assert k == 0 and sigma.tolist() == [1.0, 1.0]
        return x_t

    assert _frames_equal(first_input(noise_frame_share=1.0))
    assert not _frames_equal(first_input())
    # noised real latents follow the forward process: iid noise whatever the knob says
    assert not _frames_equal(first_input(noise_frame_share=1.0, generator_input="real"))


def test_the_entry_carries_the_share_to_the_sampler(tiny_folder, tmp_path):
    """A student exported with a share is sampled from that noise: the clip is the hand-computed
    one-step prediction from frame-shared noise, and its settings say so."""
    folder = tmp_path / "copy"
    shutil.copytree(tiny_folder, folder)
    four = loading.load(str(folder)).student(4)[0].transformer
    add_student_lora(folder, four, 1, [1000], base_steps=4, rank=2, noise_frame_share=1.0)
    add_student(folder, tiny_transformer(seed=5), 2, [1000, 500])  # iid noise: no key written
    students = json.loads((folder / "rushes.json").read_text())["students"]
    assert students["1"]["noise_frame_share"] == 1.0 and "noise_frame_share" not in students["2"]
    loaded = loading.load(str(folder))
    assert (loaded.noise_frame_share(1), loaded.noise_frame_share(2), loaded.noise_frame_share(4)) == (1.0, 0.0, 0.0)

    req = GenerateRequest(prompt="a red ball", model=str(folder), steps=1, seed=11)
    clip = [e for e in Engine().generate(req) if isinstance(e, Result)][0].value
    assert clip.meta["noise_frame_share"] == 1.0
    gen = torch.Generator().manual_seed(11)
    shape = (1, *loaded.codec.latent_shape(clip.meta["frames"], clip.meta["height"], clip.meta["width"]))
    noise = frame_shared_noise(noise_like(shape, gen, "cpu"), 1.0, gen)
    with torch.no_grad():
        expected = loaded.student(1)[0].predict_x0(noise, torch.ones(1), loaded.text.encode(["a red ball"]))
    torch.testing.assert_close(clip.latents, expected)


def test_a_bad_share_in_rushes_json_is_refused_at_load(tiny_folder, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_folder, folder)
    info = json.loads((folder / "rushes.json").read_text())
    info["students"]["1"]["noise_frame_share"] = 2
    (folder / "rushes.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="student 1's noise_frame_share must be a number in \\[0, 1\\], got 2"):
        loading.load(str(folder))


def test_reward_tuning_draws_the_students_own_noise(tiny_folder, tmp_path):
    from engine.tune.config import TuneConfig
    from engine.tune.trainer import Tuner

    folder = tmp_path / "copy"
    shutil.copytree(tiny_folder, folder)
    add_student(folder, tiny_transformer(seed=1), 1, [1000], noise_frame_share=1.0)
    cfg = TuneConfig(model=str(folder), student_steps=1, steps=1, batch=2, reward="colourfulness",
                     prompts=["a red ball", "a blue box"])
    tuner = Tuner(cfg, loading.load(str(folder)), Path("unused"), TRAIN_PROMPTS)
    x_t, _, _ = tuner._inputs(torch.Generator().manual_seed(0), ["a red ball", "a blue box"])
    assert _frames_equal(x_t)
