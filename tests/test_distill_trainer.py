import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from conftest import TOYWORLD, tiny_transformer, tiny_vae
from engine import checkpoint, loading
from engine.distill.config import DistillConfig
from engine.distill.trainer import train
from engine.events import Failed, Progress, Result
from engine.folder import ModelInfo, write_pipeline

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = write_pipeline(tmp_path_factory.mktemp("d") / "tiny", tiny_transformer(), tiny_vae(),
                            FlowMatchEulerDiscreteScheduler(shift=3.0), ModelInfo(name="tiny"))
    return loading.load(str(folder))


def _cfg(**kw):
    base = dict(steps=4, batch=2, frames=3, size=32, checkpoint_every=2, pool_capacity=32, fake_updates=2,
                lrm_warmup=0)  # every term from the first update
    return DistillConfig(**(base | kw))


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValueError, match="typo"):
        DistillConfig.from_dict({"typo": 1})
    with pytest.raises(ValueError, match="vsd\\+gan"):
        DistillConfig(method="vsd+gan")
    with pytest.raises(ValueError, match="cd_m"):
        DistillConfig(cd_m=0)
    with pytest.raises(ValueError, match="-5"):
        DistillConfig(lrm_warmup=-5)


def test_lrm_warmup_fits_the_lrm_before_the_generator_follows_it(loaded, tmp_path):
    events = list(train(_cfg(method="vsd+lrm", steps=3, student_steps=2, lrm_warmup=2), loaded, tmp_path, TOYWORLD))
    metrics = [e.metrics for e in events if isinstance(e, Progress)]
    assert all("lrm_fit_loss" in m for m in metrics)  # the LRM fits from the first update
    assert ["ft_loss" in m for m in metrics] == [False, False, True]  # L_FT only after the warm-up


@pytest.mark.parametrize("method", ["vsd", "vsd+cd", "vsd+lrm", "vsd+cd+lrm"])
def test_each_ablation_trains_and_logs_its_terms(loaded, tmp_path, method):
    events = list(train(_cfg(method=method, steps=2, student_steps=2), loaded, tmp_path, TOYWORLD))
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.step for p in progress] == [1, 2] and isinstance(events[-1], Result)
    keys = set(progress[-1].metrics)
    assert "vsd_loss" in keys and "fake_flow_loss" in keys
    assert ("cd_loss" in keys) == ("cd" in method)
    assert ("lrm_fit_loss" in keys) == ("lrm" in method) == ("ft_loss" in keys)
    student = events[-1].value.acc.unwrap_model(events[-1].value.student_ddp)
    teacher = loaded.teacher.transformer
    assert any(not torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))


def test_resume_equals_uninterrupted(loaded, tmp_path):
    cfg = _cfg(method="vsd+cd+lrm", generator_input="real")
    whole = list(train(cfg, loaded, tmp_path / "whole", TOYWORLD))
    assert isinstance(whole[-1], Result)
    first = train(cfg, loaded, tmp_path / "split", TOYWORLD)
    for event in first:  # killed after update 3's report, before its checkpoint: update 2's is the last
        if isinstance(event, Progress) and event.step == 3:
            break
    first.close()
    resumed = list(train(cfg, loaded, tmp_path / "split", TOYWORLD))
    assert [e.step for e in resumed if isinstance(e, Progress)] == [3, 4]
    a = checkpoint.latest(tmp_path / "whole")
    b = checkpoint.latest(tmp_path / "split")
    assert a[0] == b[0] == 4
    for key, tensor in a[1]["student"].items():
        assert torch.allclose(tensor, b[1]["student"][key], atol=1e-5), key
    assert a[2]["generator_loss"] == pytest.approx(b[2]["generator_loss"], rel=1e-4, abs=1e-6)
    shorter = list(train(replace(cfg, steps=2), loaded, tmp_path / "whole", TOYWORLD))  # regression: exported 4 updates
    assert len(shorter) == 1 and isinstance(shorter[0], Failed)
    assert "already made 4 updates, more than the 2" in shorter[0].message


def test_huge_learning_rate_stops_as_diverged_without_saving_nan(loaded, tmp_path):
    events = list(train(_cfg(method="vsd", lr=1e4, fake_lr=1e4, steps=30, checkpoint_every=1),
                        loaded, tmp_path, TOYWORLD))
    assert isinstance(events[-1], Failed) and events[-1].kind == "diverged"
    found = checkpoint.latest(tmp_path)
    if found:
        assert all(torch.isfinite(t).all() for t in found[1]["student"].values())


def test_cancel_stops_between_updates(loaded, tmp_path):
    calls = []
    events = list(train(_cfg(steps=10), loaded, tmp_path, TOYWORLD, should_stop=lambda: len(calls.append(1) or calls) > 3))
    assert isinstance(events[-1], Failed) and events[-1].kind == "cancelled"
    assert max(e.step for e in events if isinstance(e, Progress)) == 3
    assert checkpoint.latest(tmp_path)[0] == 3  # checkpointed on the way out (every 2 otherwise): resume goes on from 3


def test_two_processes_stay_in_sync(tmp_path):
    # `accelerate launch --multi_gpu` starts torchrun; on a CPU machine the Accelerator uses gloo
    env = os.environ | {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           str(ROOT / "tests" / "ddp_distill_script.py"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = re.findall(r"rank (\d) (\d+) (-?[\d.]+) (-?\d+\.\d{6})", proc.stdout)
    assert len(lines) == 2, proc.stdout
    (r0, steps0, sum0, data0), (r1, steps1, sum1, data1) = sorted(lines)
    assert steps0 == steps1 == "2" and sum0 == sum1  # same weights after two synced updates
    assert data0 != data1  # but each rank trained on its own clips


def test_cli_distill_writes_a_loadable_student(tiny_folder, tmp_path, capsys):
    from engine.cli import main

    config = tmp_path / "c.json"
    config.write_text('{"batch": 2, "frames": 3, "size": 32, "pool_capacity": 16, "fake_updates": 1}')
    out = tmp_path / "out"
    assert main(["distill", "--config", str(config), "--model", str(tiny_folder), "--steps", "2",
                 "--student-steps", "2", "--method", "vsd+cd", "--out", str(out)]) == 0
    info = (out / "rushes.json").read_text()
    assert '"2"' in info and (out / "students" / "2step" / "config.json").exists()
    assert main(["generate", "--model", str(out), "--prompt", "a ball", "--steps", "2",
                 "--out", str(tmp_path / "x.mp4"), "--json"]) == 0
    assert '"nfe": 2' in capsys.readouterr().out
    config.write_text('{"batch": 2, "lr_typo": 1}')
    assert main(["distill", "--config", str(config), "--model", str(tiny_folder), "--out", str(out)]) == 2
    assert "lr_typo" in capsys.readouterr().err


def test_progressive_init_starts_from_the_named_student(tiny_folder, tmp_path):
    from engine.distill.trainer import DollarTrainer

    model = loading.load(str(tiny_folder))
    trainer = DollarTrainer(_cfg(student_steps=1, init_student=2), model, tmp_path / "w", TOYWORLD)
    source = model.student(2)[0].transformer.state_dict()
    for name, value in trainer.acc.unwrap_model(trainer.student_ddp).state_dict().items():
        assert torch.equal(value, source[name].float()), name
    teacher = model.teacher.transformer.state_dict()
    assert any(not torch.equal(v, teacher[k]) for k, v in trainer.ema.state_dict().items())
    with pytest.raises(ValueError, match="no 3-step student"):
        DollarTrainer(_cfg(student_steps=1, init_student=3), model, tmp_path / "x", TOYWORLD)


def test_run_folder_ignores_the_step_count_so_a_run_can_be_extended():
    from engine.distill.run import run_dir

    assert run_dir(_cfg(steps=4), "m") == run_dir(_cfg(steps=400), "m") != run_dir(_cfg(steps=4, lr=1e-3), "m")


def test_a_new_teacher_under_the_same_name_starts_a_new_run(tmp_path):
    """Regression: the run folder was keyed by settings and model name only, so distilling again
    after re-baking the teacher resumed (and re-exported) the student of the old teacher."""
    from engine.distill.run import run_dir, weights_fingerprint
    from tests.conftest import tiny_transformer

    tiny_transformer(seed=0).save_pretrained(tmp_path / "a", safe_serialization=True)
    tiny_transformer(seed=1).save_pretrained(tmp_path / "b", safe_serialization=True)
    first, second = weights_fingerprint(tmp_path / "a"), weights_fingerprint(tmp_path / "b")
    assert first != second and first == weights_fingerprint(tmp_path / "a")
    assert run_dir(_cfg(), "m", first) != run_dir(_cfg(), "m", second)
    assert run_dir(_cfg(steps=4), "m", first) == run_dir(_cfg(steps=40), "m", first)


def test_alias_serves_fewer_steps_with_one_network(tiny_folder, tmp_path):
    import shutil

    from engine.distill.export import alias_student

    folder = tmp_path / "copy"
    shutil.copytree(tiny_folder, folder)
    alias_student(folder, 2, 4, [1000, 500], record={"method": "alias"})
    assert not (folder / "students" / "2step").exists()
    model = loading.load(str(folder))
    two, four = model.student(2), model.student(4)
    assert two[1] == [1000, 500] and four[1] == [1000, 750, 500, 250]
    for (k, a), b in zip(two[0].transformer.state_dict().items(), four[0].transformer.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="no 3-step student"):
        alias_student(folder, 1, 3, [1000])


def _reg_cfg(**kw):
    return _cfg(**({"method": "vsd", "student_steps": 1, "w_reg": 1.0, "reg_pairs": 4, "reg_steps": 2} | kw))


def test_config_rejects_bad_regression_knobs():
    with pytest.raises(ValueError, match="-0.5"):
        DistillConfig(w_reg=-0.5)
    with pytest.raises(ValueError, match="reg_pairs.*got 1"):
        DistillConfig(w_reg=1.0, batch=2, reg_pairs=1)
    with pytest.raises(ValueError, match="reg_steps must be >= 1, got 0"):
        DistillConfig(reg_steps=0)


def test_teacher_pairs_are_deterministic_and_saved_whole(loaded, tmp_path):
    from engine.distill import regression as reg

    def make(seed):
        gen = reg.make_pairs(loaded.teacher, loaded.text, TOYWORLD.prompts("train", 3, seed), (4, 2, 4, 4), 3, 2,
                             3.0, 3.0, seed, batch=2)
        done = []
        while True:
            try:
                done.append(next(gen).step)
            except StopIteration as stop:
                return done, stop.value

    done, pairs = make(0)
    assert done == [2, 3]  # progress per batch
    assert pairs["noise"].shape == pairs["target"].shape == (3, 4, 2, 4, 4) and len(pairs["captions"]) == 3
    assert torch.isfinite(pairs["target"]).all() and not torch.equal(pairs["target"], pairs["noise"])
    again = make(0)[1]
    assert torch.equal(again["target"], pairs["target"]) and again["captions"] == pairs["captions"]
    assert not torch.equal(make(1)[1]["noise"], pairs["noise"])
    settings = {"count": 3, "seed": 0}
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / reg.PAIRS_FILE
    reg.save_pairs(path, pairs, settings)
    assert [p.name for p in path.parent.iterdir()] == [reg.PAIRS_FILE]  # no temp file left behind
    back = reg.load_pairs(path, settings)
    assert torch.equal(back["target"], pairs["target"]) and back["captions"] == pairs["captions"]
    assert reg.load_pairs(path, settings | {"seed": 1}) is None  # made otherwise: not reused
    assert reg.load_pairs(tmp_path / "absent.safetensors", settings) is None


def test_regression_term_trains_a_one_step_student_and_resume_reuses_its_pairs(loaded, tmp_path):
    from engine.distill import regression as reg

    events = list(train(_reg_cfg(steps=2), loaded, tmp_path, TOYWORLD))
    made = [e for e in events if isinstance(e, Progress) and e.stage == "pairs"]
    assert made and made[-1].step == made[-1].total == 4
    updates = [e for e in events if isinstance(e, Progress) and e.stage == "distill"]
    assert len(updates) == 2 and all(u.metrics["reg_loss"] > 0 for u in updates)  # every 1-step update
    assert isinstance(events[-1], Result)
    stamp = (tmp_path / reg.PAIRS_FILE).stat().st_mtime_ns
    resumed = list(train(_reg_cfg(steps=4), loaded, tmp_path, TOYWORLD))
    assert not [e for e in resumed if isinstance(e, Progress) and e.stage == "pairs"]  # loaded, not remade
    assert [e.step for e in resumed if isinstance(e, Progress)] == [3, 4]
    assert (tmp_path / reg.PAIRS_FILE).stat().st_mtime_ns == stamp


def test_cancel_while_making_pairs_stops_before_any_update(loaded, tmp_path):
    calls = []
    events = list(train(_reg_cfg(reg_pairs=8), loaded, tmp_path, TOYWORLD, should_stop=lambda: len(calls.append(1) or calls) > 1))
    assert isinstance(events[-1], Failed) and events[-1].kind == "cancelled"
    assert not [e for e in events if isinstance(e, Progress) and e.stage == "distill"]


def test_run_folder_ignores_regression_knobs_while_the_term_is_off():
    from engine.distill.run import run_dir

    assert run_dir(_cfg(reg_pairs=999), "m") == run_dir(_cfg(), "m") != run_dir(_cfg(w_reg=1.0), "m")


def test_gan_losses_follow_the_non_saturating_equations():
    from engine.distill.gan import discriminator_loss, generator_loss

    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0], requires_grad=True)
    l_d, logs = discriminator_loss(real, fake)
    sp = torch.nn.functional.softplus
    want = (sp(torch.tensor(-2.0)) + sp(torch.tensor(0.0))) / 2 + (sp(torch.tensor(-1.0)) + sp(torch.tensor(1.0))) / 2
    assert torch.isclose(l_d, want) and logs["gan_real_logit"] == 1.0
    l_g, _ = generator_loss(fake)
    assert torch.isclose(l_g, (sp(torch.tensor(1.0)) + sp(torch.tensor(-1.0))) / 2)
    l_g.backward()  # d/dd softplus(-d) = -sigmoid(-d): raising the fake logit lowers L_G
    assert torch.allclose(fake.grad, -torch.sigmoid(-fake.detach()) / 2)


def test_matching_aware_discriminator_counts_real_clips_under_wrong_captions_as_fake():
    """GAN-CLS (gan.py): with `mismatch`, the real latents come again under captions rolled by one
    clip, at the same levels, and L_D averages their softplus(D) with the samples' as fakes."""
    from engine.distill.gan import FeatureTap, RealComparison, discriminator_loss

    real, real_text = torch.randn(2, 4, 3, 2, 2), torch.tensor([[1.0], [2.0]])
    x_t, sigma, text = torch.randn(2, 4, 3, 2, 2), torch.tensor([0.3, 0.8]), torch.tensor([[5.0], [6.0]])
    tap = FeatureTap.__new__(FeatureTap)
    plain = RealComparison(lambda f: f.sum(-1), tap, real, real_text, 0.5)
    aware = RealComparison(lambda f: f.sum(-1), tap, real, real_text, 0.5, mismatch=True)
    x_all, levels, cond = aware.with_real(x_t, sigma, text, torch.Generator().manual_seed(0))
    x_plain, _, _ = plain.with_real(x_t, sigma, text, torch.Generator().manual_seed(0))
    assert torch.equal(x_all[:4], x_plain) and torch.equal(x_all[4:], x_all[2:4])  # the same noised real clips
    assert torch.equal(levels, sigma.repeat(3)) and cond[:, 0].tolist() == [5.0, 6.0, 1.0, 2.0, 2.0, 1.0]
    tap.features = torch.tensor([[[1.0]], [[-1.0]], [[2.0]], [[0.5]], [[3.0]], [[-2.0]]])  # [rows, tokens, dim]
    loss, logs = aware.loss(2)
    want, _ = discriminator_loss(torch.tensor([[2.0], [0.5]]), torch.tensor([[1.0], [-1.0], [3.0], [-2.0]]))
    assert torch.isclose(loss, 0.5 * want) and logs["gan_mismatch_logit"] == 0.5
    tap.features = tap.features[:4]
    assert "gan_mismatch_logit" not in plain.loss(2)[1]
    with pytest.raises(ValueError, match="batch must be >= 2, got 1"):
        DistillConfig(w_gan=0.1, gan_mismatch=True, batch=1)


def test_config_rejects_bad_gan_knobs():
    with pytest.raises(ValueError, match="-1.0"):
        DistillConfig(w_gan=-1.0)
    with pytest.raises(ValueError, match="w_gan_d > 0.*0.0"):
        DistillConfig(w_gan=0.1, w_gan_d=0.0)


@pytest.mark.parametrize("mismatch", [False, True])
def test_gan_term_trains_the_discriminator_and_resumes_it(loaded, tmp_path, mismatch):
    cfg = _cfg(method="vsd", student_steps=1, w_gan=0.5, steps=2, gan_mismatch=mismatch)
    events = list(train(cfg, loaded, tmp_path, TOYWORLD))
    updates = [e for e in events if isinstance(e, Progress)]
    assert isinstance(events[-1], Result) and len(updates) == 2
    assert all(u.metrics["gan_g_loss"] > 0 and u.metrics["gan_d_loss"] > 0 for u in updates)
    assert all(("gan_mismatch_logit" in u.metrics) == mismatch for u in updates)
    trainer = events[-1].value
    head = trainer.acc.unwrap_model(trainer.disc_ddp)
    assert all(p.requires_grad for p in head.parameters())  # unfrozen again after the generator pass
    assert all(p.requires_grad for p in trainer.acc.unwrap_model(trainer.fake_ddp).parameters())
    saved = checkpoint.latest(tmp_path)[1]
    assert torch.equal(saved["disc"]["net.1.weight"], head.state_dict()["net.1.weight"])
    resumed = list(train(replace(cfg, steps=3), loaded, tmp_path, TOYWORLD))
    assert [e.step for e in resumed if isinstance(e, Progress)] == [3]
    back = resumed[-1].value.acc.unwrap_model(resumed[-1].value.disc_ddp)
    assert not torch.equal(back.state_dict()["net.1.weight"], saved["disc"]["net.1.weight"])  # it went on training


def test_run_folder_ignores_gan_knobs_while_the_term_is_off():
    from engine.distill.run import run_dir

    assert run_dir(_cfg(w_gan_d=0.5), "m") == run_dir(_cfg(), "m") != run_dir(_cfg(w_gan=0.1), "m")
    assert run_dir(_cfg(gan_mismatch=True), "m") == run_dir(_cfg(), "m")
    assert run_dir(_cfg(w_gan=0.1, gan_mismatch=True), "m") != run_dir(_cfg(w_gan=0.1), "m")


def test_pixel_reward_term_climbs_a_differentiable_reward_through_the_decoder(loaded, tmp_path):
    events = list(train(_cfg(method="vsd", student_steps=1, steps=2, w_px=1.0), loaded, tmp_path, TOYWORLD))
    updates = [e.metrics for e in events if isinstance(e, Progress)]
    assert isinstance(events[-1], Result) and len(updates) == 2
    for m in updates:
        assert 0.0 <= m["px_reward"] <= 1.0 and m["px_loss"] == -m["px_reward"]
        assert m["generator_loss"] == pytest.approx(m["vsd_loss"] + m["px_loss"], abs=1e-4)
    vae = loaded.codec.vae
    assert not any(p.requires_grad for p in vae.parameters())  # the decoder passes the gradient, learns nothing


def test_config_names_a_bad_pixel_reward_and_the_run_folder_ignores_it_while_off():
    from engine.distill.run import run_dir

    with pytest.raises(ValueError, match="-0.5"):
        DistillConfig(w_px=-0.5)
    with pytest.raises(ValueError, match="'sparkle'"):
        DistillConfig(w_px=1.0, px_reward="sparkle")
    assert run_dir(_cfg(px_reward="sparkle"), "m") == run_dir(_cfg(), "m") != run_dir(_cfg(w_px=1.0), "m")
