import json
import math
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TRAIN_PROMPTS
from engine import checkpoint, loading
from engine.events import Failed, Progress, Result
from engine.reward import builtin
from engine.reward.custom import CustomReward, RewardError
from engine.reward.spec import RewardSpec, scorer
from engine.store import Store
from engine.toyworld.render import render, sample_clip
from engine.tune.config import TuneConfig
from engine.tune.trainer import Tuner, train

CLIP = render(sample_clip("train", 2)[0])


def test_builtin_rewards_move_the_right_way():
    grey = np.full_like(CLIP, 128)
    assert builtin.colourfulness(CLIP) > builtin.colourfulness(grey) == 0
    assert builtin.contrast(CLIP) > builtin.contrast(grey) == 0
    assert builtin.brightness(grey, target=0.5) > builtin.brightness(CLIP, target=0.5)
    blurred = ((CLIP.astype(np.float32) + np.roll(CLIP, 1, 2) + np.roll(CLIP, 1, 1)) / 3).astype(np.uint8)
    assert builtin.sharpness(CLIP) > builtin.sharpness(blurred)
    still = np.repeat(CLIP[:1], len(CLIP), 0)
    assert builtin.motion(CLIP) > builtin.motion(still) == 0
    noisy = np.random.default_rng(0).integers(0, 255, CLIP.shape, dtype=np.uint8)
    assert builtin.smoothness(CLIP) > builtin.smoothness(noisy)
    assert builtin.compressibility(grey) > builtin.compressibility(noisy)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 230
    palette = builtin.palette_reward(red)
    redder = CLIP.copy()
    redder[..., 0], redder[..., 1:] = 230, 0
    assert palette(redder) > palette(CLIP)
    spec, caption = sample_clip("public-eval", 0)
    assert builtin.get("toyworld-semantic")(render(spec), caption) == 1.0
    assert builtin.get("toyworld-semantic")(np.zeros_like(CLIP), caption) == 0.0
    assert builtin.get("toyworld-soft")(render(spec), caption) == 1.0
    assert builtin.get("toyworld-soft")(np.zeros_like(CLIP), caption) == 0.0
    assert builtin.get("toyworld-soft")(render(spec), "a sunset over the sea") == 0.0  # names no toyworld object


@pytest.mark.parametrize("body, named", [
    ("def reward(f, p):\n    while True: pass\n", "timed out"),
    ("import os\ndef reward(f, p):\n    if os.fork() == 0:\n        import time; time.sleep(60)\n    while True: pass\n", "timed out"),
    ("def reward(f, p):\n    raise RuntimeError('boom')\n", "boom"),
    ("def reward(f, p):\n    return float('nan')\n", "non-finite"),
    ("def reward(f, p):\n    return 'high'\n", "instead of a number"),
])
def test_custom_rewards_that_misbehave_are_stopped(tmp_path, body, named):
    path = tmp_path / "r.py"
    path.write_text(body)
    began = time.perf_counter()
    with pytest.raises(RewardError, match=named):
        CustomReward(path, timeout_s=2).batch([CLIP], ["x"])
    assert time.perf_counter() - began < 20


def test_custom_reward_that_works(tmp_path):
    path = tmp_path / "r.py"
    path.write_text("def reward(frames, prompt):\n    return float(frames.mean()) / 255 + len(prompt)\n")
    values = scorer(RewardSpec("custom", file=str(path)))([CLIP, CLIP * 0], ["ab", "a"])
    assert values[0] == pytest.approx(CLIP.mean() / 255 + 2) and values[1] == 1.0


def test_bad_reward_names_are_clear():
    for spec, named in [(RewardSpec("sparkle"), "sparkle"), (RewardSpec("palette"), "reference"),
                        (RewardSpec("custom"), "reward file"), (RewardSpec("palette", reference="/nope.png"), "nope")]:
        with pytest.raises(ValueError, match=named):
            scorer(spec)


def _cfg(folder, **kw):
    return TuneConfig(**({"model": str(folder), "steps": 4, "batch": 2, "lrm_warmup": 1, "checkpoint_every": 2,
                          "reward": "colourfulness", "prompts": ["a red ball", "a blue box"]} | kw))


def test_target_modules_that_match_no_layer_are_named(tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="target_modules"):
        TuneConfig(target_modules=[])
    with pytest.raises(ValueError, match=r"attn9\.to_q.*attn1\.to_q"):  # names the bad one and what exists
        list(train(_cfg(tiny_folder, target_modules=["attn1.to_q", "attn9.to_q"]), loading.load(str(tiny_folder)),
                   tmp_path / "a"))
    events = list(train(_cfg(tiny_folder, steps=2, target_modules=["attn1.to_q", "ffn.net.2"]),
                        loading.load(str(tiny_folder)), tmp_path / "b"))
    trained = {n.split(".lora_")[0] for n, p in events[-1].value.transformer.named_parameters() if p.requires_grad}
    assert trained and all(n.endswith(("attn1.to_q", "ffn.net.2")) for n in trained)
    again = Tuner(_cfg(tiny_folder, target_modules=["attn2.to_k"]), events[-1].value.loaded, tmp_path / "c", TRAIN_PROMPTS)
    assert again.lora_params  # layers peft already wrapped still match by name


@pytest.mark.parametrize("replay", [0, 4])
def test_tune_moves_only_the_lora_and_resumes(tiny_folder, tmp_path, replay):
    events = list(train(_cfg(tiny_folder, lrm_replay=replay, reward_norm=bool(replay)), loading.load(str(tiny_folder)), tmp_path / "a", TRAIN_PROMPTS))
    assert isinstance(events[-1], Result)
    tuner = events[-1].value
    lora = [n for n, p in tuner.transformer.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    assert any("ffn" in n for n in lora) and not any("attn2" in n for n in lora)  # default: leave the prompt's path
    assert {"reward", "lrm_fit_loss", "reg", "loss"} <= set(events[-1 - 1].metrics)
    gen = train(_cfg(tiny_folder, lrm_replay=replay, reward_norm=bool(replay)), loading.load(str(tiny_folder)), tmp_path / "b", TRAIN_PROMPTS)
    for event in gen:
        if isinstance(event, Progress) and event.stage == "tuning" and event.step == 3:
            break  # update 4 (1 warm-up + 3 tuning) is reported, its checkpoint not yet written; update 2's is
    gen.close()
    rest = list(train(_cfg(tiny_folder, lrm_replay=replay, reward_norm=bool(replay)), loading.load(str(tiny_folder)), tmp_path / "b", TRAIN_PROMPTS))
    assert [(e.stage, e.step) for e in rest if isinstance(e, Progress)] == [("tuning", 2), ("tuning", 3), ("tuning", 4)]
    a, b = checkpoint.latest(tmp_path / "a"), checkpoint.latest(tmp_path / "b")
    for key in a[1]["lora"]:
        assert torch.allclose(a[1]["lora"][key], b[1]["lora"][key], atol=1e-5), key
    assert torch.equal(a[1]["replay"]["x"], b[1]["replay"]["x"])  # the LRM's replay buffer resumes too
    assert torch.allclose(a[1]["reward_stats"], b[1]["reward_stats"])  # and the reward's running statistics
    assert (a[1]["reward_stats"][0] > 0) == bool(replay)  # kept only where reward_norm uses them
    assert all(torch.allclose(a[1]["lrm"][k], b[1]["lrm"][k], atol=1e-5) for k in a[1]["lrm"])


def test_running_reward_statistics_match_the_whole_history():
    from engine.tune.trainer import running_stats

    batches = [torch.tensor([0.3, 0.5]), torch.tensor([0.9]), torch.tensor([0.1, 0.2, 0.4, 2.0])]
    stats = torch.zeros(3, dtype=torch.float64)
    for b in batches:
        stats = running_stats(stats, b)
    seen = torch.cat(batches).double()
    assert stats[0] == 7
    assert torch.isclose(stats[1], seen.mean()) and torch.isclose(stats[2] / stats[0], seen.var(unbiased=False))


def test_reward_norm_divides_the_lrm_term_by_the_running_sd(tiny_folder):
    from engine.tune.trainer import Tuner

    tuner = Tuner(_cfg(tiny_folder, reward_norm=True), loading.load(str(tiny_folder)), Path("unused"), TRAIN_PROMPTS)
    tuner.update()  # warm-up: the LRM fits, no L_FT yet
    logs = tuner.update()
    n, _, m2 = tuner.reward_stats.tolist()
    assert n == 4 and logs["reward_sd"] == pytest.approx((m2 / n) ** 0.5)
    assert logs["loss"] == pytest.approx(logs["ft_loss"] / logs["reward_sd"] + logs["reg"], rel=1e-4)


def test_lrm_refits_on_replayed_samples(tiny_folder, monkeypatch):
    """Each LRM update sees the new batch plus remembered (sample, prompt, reward) triples, drawn
    before the batch is stored; the ring buffer keeps the newest `lrm_replay`."""
    from engine.tune.trainer import Tuner

    cfg = _cfg(tiny_folder, lrm_replay=3, lrm_replay_batch=2, lrm_warmup=10)
    tuner = Tuner(cfg, loading.load(str(tiny_folder)), Path("unused"), TRAIN_PROMPTS)
    sizes = []
    fit = tuner.lrm.forward
    monkeypatch.setattr(tuner.lrm, "forward", lambda x, text=None, each=False: sizes.append(len(x)) or fit(x, text, each))
    for _ in range(3):
        tuner.update()
    assert sizes == [2, 4, 4]  # batch 2, then 2 + 2 replayed
    assert int(tuner.replay["count"]) == 6
    rewards = tuner.replay["reward"]
    assert rewards.abs().sum() > 0 and set(tuner.replay["prompt"].tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="lrm_replay"):
        TuneConfig(lrm_replay=-1)


def test_vsd_regulariser_trains_a_fake_score_and_resumes_exactly(tiny_folder, tmp_path):
    cfg = _cfg(tiny_folder, reg="vsd", steps=3, checkpoint_every=1)
    events = list(train(cfg, loading.load(str(tiny_folder)), tmp_path / "a", TRAIN_PROMPTS))
    assert isinstance(events[-1], Result)
    last = events[-2].metrics
    assert {"reg", "fake_loss", "vsd_grad_norm"} <= set(last) and all(map(math.isfinite, last.values()))
    tuner = events[-1].value
    teacher = loading.load(str(tiny_folder)).teacher.transformer.state_dict()
    moved = [k for k, v in tuner.fake.transformer.state_dict().items() if not torch.equal(v, teacher[k])]
    assert moved  # the fake score learnt from the tuned student's samples
    gen = train(cfg, loading.load(str(tiny_folder)), tmp_path / "b", TRAIN_PROMPTS)
    for event in gen:
        if isinstance(event, Progress) and event.step == 2:
            break
    gen.close()
    rest = list(train(cfg, loading.load(str(tiny_folder)), tmp_path / "b", TRAIN_PROMPTS))
    assert [e.step for e in rest if isinstance(e, Progress)] == [2, 3]  # reported, not yet checkpointed: redone
    a, b = checkpoint.latest(tmp_path / "a")[1], checkpoint.latest(tmp_path / "b")[1]
    for key in a["lora"]:
        assert torch.allclose(a["lora"][key], b["lora"][key], atol=1e-5), key
    for key in a["fake"]:
        assert torch.allclose(a["fake"][key], b["fake"][key], atol=1e-5), key


def test_bad_reward_stops_the_run_without_an_optimizer_step(tiny_folder, tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("def reward(f, p):\n    return float('nan')\n")
    loaded = loading.load(str(tiny_folder))
    events = list(train(_cfg(tiny_folder, reward="custom", reward_file=str(path)), loaded, tmp_path / "w", TRAIN_PROMPTS))
    assert isinstance(events[-1], Failed) and "non-finite" in events[-1].message
    assert checkpoint.latest(tmp_path / "w") is None


def test_huge_lr_diverges_without_saving_nan(tiny_folder, tmp_path):
    events = list(train(_cfg(tiny_folder, lr=1e4, steps=30, checkpoint_every=1),
                        loading.load(str(tiny_folder)), tmp_path / "w"))
    assert isinstance(events[-1], Failed) and events[-1].kind == "diverged"
    found = checkpoint.latest(tmp_path / "w")
    assert found is None or all(torch.isfinite(t).all() for t in found[1]["lora"].values())


def test_tune_device_is_checked_and_named(tiny_folder, rushes_home, tmp_path):
    from engine.tune.run import run_tune

    with pytest.raises(ValueError, match="tpu"):
        TuneConfig(device="tpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    events = list(run_tune(_cfg(tiny_folder, device="cuda"), tmp_path / "a"))
    assert isinstance(events[-1], Failed) and "cuda" in events[-1].message
    assert not (tmp_path / "a").exists()


def test_cli_tune_writes_a_diffusers_adapter(tiny_folder, rushes_home, tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "adapter"
    code = main(["tune", "--model", str(tiny_folder), "--reward", "contrast", "--steps", "3", "--batch", "2",
                 "--eval-prompts", "1", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["adapter"] == str(out) and summary["reward_before"] is not None
    meta = json.loads((out / "adapter.json").read_text())
    assert meta["reward"] == "contrast" and meta["steps"] == 3
    db = sqlite3.connect(rushes_home / "studio.db")
    assert db.execute("select status from runs").fetchone()[0] == "done"
    assert db.execute("select count(*) from run_metrics").fetchone()[0] > 0
    assert db.execute("select count(*) from adapters").fetchone()[0] == 1
    assert main(["generate", "--model", str(tiny_folder), "--prompt", "x", "--lora", str(out), "--lora-scale", "0.5",
                 "--out", str(tmp_path / "x.mp4")]) == 0


def test_cancel_or_resume_of_an_unknown_run_names_it(rushes_home):
    from engine import jobs, paths

    store = Store(paths.database())
    assert store.run(12345) is None
    for act in (jobs.cancel, jobs.resume):
        with pytest.raises(ValueError, match="no run with id 12345"):
            act(store, 12345)


def test_background_job_cancel_and_resume(tiny_folder, rushes_home, tmp_path):
    from engine import jobs, paths

    store = Store(paths.database())
    cfg = _cfg(tiny_folder, steps=400, checkpoint_every=2)
    run_id = jobs.start_tune(store, cfg, tmp_path / "adapter")
    deadline = time.time() + 120
    while time.time() < deadline and (store.run(run_id)["step"] or 0) < 3:
        time.sleep(0.5)
    assert store.run(run_id)["status"] == "running" and store.run(run_id)["step"] >= 3
    jobs.cancel(store, run_id)
    while time.time() < deadline and store.run(run_id)["status"] != "cancelled":
        time.sleep(0.5)
    assert store.run(run_id)["status"] == "cancelled"
    import psutil

    psutil.Process(store.run(run_id)["pid"]).wait(timeout=30)
    assert jobs.sweep_interrupted(store) == []
    stopped_at = store.run(run_id)["step"]
    jobs.resume(store, run_id)
    while time.time() < deadline + 60 and (store.run(run_id)["step"] or 0) <= stopped_at + 1:
        time.sleep(0.5)
    assert store.run(run_id)["step"] > stopped_at
    jobs.cancel(store, run_id)
    psutil.Process(store.run(run_id)["pid"]).wait(timeout=60)


def test_steps_count_generator_updates_after_a_warm_up_phase_and_a_cancel_resumes_where_it_stopped(tiny_folder,
                                                                                                       tmp_path):
    """5 steps asked = 5 LoRA updates, after the reward model's own 2-update warm-up, each phase
    counted apart; a cancel checkpoints first, so resuming goes on from the next update."""
    cfg = _cfg(tiny_folder, steps=5, lrm_warmup=2, checkpoint_every=100)
    calls = []
    events = list(train(cfg, loading.load(str(tiny_folder)), tmp_path / "w", TRAIN_PROMPTS,
                        should_stop=lambda: len(calls.append(1) or calls) > 4))
    shown = [(e.stage, e.step, e.total) for e in events if isinstance(e, Progress)]
    assert shown == [("fitting the reward model", 1, 2), ("fitting the reward model", 2, 2), ("tuning", 1, 5),
                     ("tuning", 2, 5)]
    assert isinstance(events[-1], Failed) and events[-1].kind == "cancelled"
    assert checkpoint.latest(tmp_path / "w")[0] == 4  # saved on the way out
    rest = list(train(cfg, loading.load(str(tiny_folder)), tmp_path / "w", TRAIN_PROMPTS))
    assert [(e.stage, e.step) for e in rest if isinstance(e, Progress)] == [("tuning", 3), ("tuning", 4), ("tuning", 5)]
    assert all(e.eta_s >= 0 for e in rest if isinstance(e, Progress)) and rest[-2].eta_s == 0
    assert "loss" in rest[-2].metrics and "loss" not in events[0].metrics  # the LoRA moves in the tuning phase only


def test_a_tune_logs_its_phases_and_says_when_the_reward_did_not_move(tiny_folder, rushes_home, tmp_path):
    from engine.tune.run import outcome, run_tune

    events = list(run_tune(_cfg(tiny_folder, steps=2, lrm_warmup=1), tmp_path / "adapter", eval_prompts=1))
    assert isinstance(events[-1], Result) and events[-1].value["message"].startswith("reward ")
    row = Store(rushes_home / "studio.db").runs(kind="tune")[0]
    assert row["status"] == "done" and row["phase"] == "done" and row["step"] == 2
    assert outcome(0.38, 0.38).endswith("(more steps or a higher learning rate may)") and "unchanged" in outcome(0.38, 0.38)
    assert outcome(0.38, 0.41) == "reward 0.38 -> 0.41" and "not measured" in outcome(None, None)


def test_a_tune_takes_the_models_own_student_and_a_teacher_alone_is_refused_with_the_way_out(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from conftest import tiny_transformer, tiny_vae
    from engine.folder import ModelInfo, write_pipeline

    info = ModelInfo(name="fast", shift=3.0, frames=5, height=32, width=32, world="toyworld")
    three = write_pipeline(tmp_path / "fast", tiny_transformer(), tiny_vae(), FlowMatchEulerDiscreteScheduler(shift=3.0),
                           info, {3: (tiny_transformer(seed=3), [1000, 757, 522])})  # FastWan's step list
    events = list(train(_cfg(three, steps=1, student_steps=None), loading.load(str(three)), tmp_path / "w",
                        TRAIN_PROMPTS))
    assert isinstance(events[-1], Result) and events[-1].value.student_steps == 3
    assert events[-1].value.timesteps == [1000, 757, 522]
    teacher = write_pipeline(tmp_path / "teacher", tiny_transformer(), tiny_vae(),
                             FlowMatchEulerDiscreteScheduler(shift=3.0), ModelInfo(name="bare", world="toyworld"))
    with pytest.raises(ValueError, match="'bare' is a teacher with no distilled student.*rushes distill --model bare"):
        list(train(_cfg(teacher, student_steps=None), loading.load(str(teacher)), tmp_path / "x", TRAIN_PROMPTS))


def test_tunes_take_turns_and_a_queued_one_says_its_place(tiny_folder, rushes_home, tmp_path):
    from engine import jobs, paths

    store = Store(paths.database())
    first = jobs.start_tune(store, _cfg(tiny_folder, steps=4000, checkpoint_every=1000), tmp_path / "a")
    deadline = time.time() + 120
    while time.time() < deadline and store.run(first)["status"] != "running":
        time.sleep(0.2)
    second = jobs.start_tune(store, _cfg(tiny_folder, steps=2), tmp_path / "b")
    both_running, said = False, set()
    while time.time() < deadline + 120 and f"queued: 1 tune(s) ahead (run {first})" not in said:
        said.add(store.run(second)["message"] or "")
        both_running |= [store.run(i)["status"] for i in (first, second)] == ["running", "running"]
        time.sleep(0.2)
    assert f"queued: 1 tune(s) ahead (run {first})" in said and store.run(second)["status"] == "queued"
    jobs.cancel(store, first)  # the one ahead ends: the queued one goes
    while time.time() < deadline + 400 and store.run(second)["status"] != "done":
        both_running |= [store.run(i)["status"] for i in (first, second)] == ["running", "running"]
        time.sleep(0.2)
    assert store.run(first)["status"] == "cancelled" and store.run(second)["status"] == "done"
    assert not both_running
