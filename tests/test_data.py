"""Data sources (engine/data.py): the user's prompts and clips, a plug-in's world, and what the
trainers do with each."""

import json
import subprocess
import sys

import numpy as np
import pytest
from diffusers import FlowMatchEulerDiscreteScheduler

from conftest import TOYWORLD, tiny_transformer, tiny_vae
from engine import data, loading
from engine.distill.config import DistillConfig
from engine.distill.trainer import train
from engine.events import Progress, Result
from engine.export import write_clip
from engine.folder import ModelInfo, read_info, write_pipeline
from engine.toyworld.render import render, sample_clip


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = write_pipeline(tmp_path_factory.mktemp("d") / "tiny", tiny_transformer(), tiny_vae(),
                            FlowMatchEulerDiscreteScheduler(shift=3.0), ModelInfo(name="tiny"))
    return loading.load(str(folder))


def test_prompt_files_in_each_format_and_their_faults(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("# my prompts\na red fox running\n\n  a calm lake at dawn  \n")
    assert data.read_prompts(txt) == ["a red fox running", "a calm lake at dawn"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "one"}) + "\n" + json.dumps({"prompt": "two", "x": 1}) + "\n")
    assert data.read_prompts(jsonl) == ["one", "two"]
    csv = tmp_path / "p.csv"
    csv.write_text('id,prompt\n1,"a cat, sleeping"\n2,a dog\n')
    assert data.read_prompts(csv) == ["a cat, sleeping", "a dog"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match="line 2 has no string field 'prompt'"):
        data.read_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "bad.csv").write_text("id,caption\n1,x\n")
    with pytest.raises(ValueError, match="no 'prompt' column \\(columns: id, caption\\)"):
        data.read_prompts(tmp_path / "bad.csv")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="has no prompts"):
        data.read_prompts(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="'nowhere.txt' does not exist"):
        data.read_prompts("nowhere.txt")


def test_a_prompt_file_draws_the_same_prompts_from_the_same_seed(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n".join(f"prompt {i}" for i in range(10)))
    source = data.PromptFile(path)
    assert source.prompts("train") == [f"prompt {i}" for i in range(10)]
    assert source.prompts("heldout", 3) == ["prompt 0", "prompt 1", "prompt 2"]  # no held-out file: the same list
    drawn = source.prompts("train", 4, seed=1)
    assert drawn == source.prompts("train", 4, seed=1) and len(set(drawn)) == 4
    assert len(source.prompts("train", 25, seed=0)) == 25  # more than there are: drawn with replacement
    with pytest.raises(ValueError, match="'test'"):
        source.prompts("test")
    other = tmp_path / "q.txt"
    other.write_text("something else")
    assert data.PromptFile(other).name != source.name  # another file is another run


def test_the_model_names_its_world_and_a_model_without_one_needs_prompts(tmp_path):
    toy = data.for_model(ModelInfo(name="toyworld", world="toyworld"))
    assert toy.name == "toyworld" and toy.has_clips
    assert toy.prompts("heldout", 2) == [sample_clip("public-heldout", i)[1] for i in range(2)]
    with pytest.raises(ValueError, match="'wan'.*--prompts FILE"):
        data.for_model(ModelInfo(name="wan"))
    with pytest.raises(ValueError, match="no data source for world 'mars'.*registered: toyworld"):
        data.for_model(ModelInfo(name="x", world="mars"))
    with pytest.raises(ValueError, match="--videos needs --prompts"):
        data.for_model(ModelInfo(name="wan"), videos=tmp_path)
    shipped = read_info(loading.resolve("toyworld")[0])
    assert shipped.world == "toyworld" and "red" in shipped.vocabulary["colours"]


def test_distilling_from_prompts_alone_trains_and_refuses_what_needs_real_clips(loaded, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red ball moving left\na blue box falling\na cat on a sofa\n")
    source = data.PromptFile(prompts)
    cfg = DistillConfig(method="vsd+lrm", steps=2, batch=2, student_steps=3, frames=3, size=32, pool_capacity=8,
                        fake_updates=1, lrm_warmup=0, reward="colourfulness")
    events = list(train(cfg, loaded, tmp_path / "w", source))
    assert isinstance(events[-1], Result), events[-1]
    trainer = events[-1].value
    assert trainer.pool is None and trainer.timesteps == [1000, 757, 522]  # a 3-step list (FastWan's)
    progress = [e for e in events if isinstance(e, Progress)]
    assert "reward_student" in progress[-1].metrics and "reward_real" not in progress[-1].metrics
    for bad, named in ((dict(method="vsd+cd"), "consistency distillation"), (dict(method="vsd", w_gan=0.01), "w_gan"),
                       (dict(method="vsd", generator_input="real"), "generator_input")):
        with pytest.raises(ValueError, match=f"{named}.*need real clips.*--videos DIR"):
            list(train(DistillConfig(**(cfg.to_dict() | bad)), loaded, tmp_path / "x", source))


def test_a_clip_folder_gives_real_clips_for_consistency_distillation(loaded, tmp_path):
    videos = tmp_path / "clips"
    videos.mkdir()
    for i in range(3):
        spec, caption = sample_clip("train", i)
        write_clip(render(spec, 6, 48), 8, videos / f"c{i}.mp4", {})
        (videos / f"c{i}.txt").write_text(caption)
    (tmp_path / "p.txt").write_text("a red ball moving left\n")
    source = data.PromptFile(tmp_path / "p.txt", videos)
    cfg = DistillConfig(method="vsd+cd", steps=2, batch=2, student_steps=2, frames=3, size=32, pool_capacity=8,
                        fake_updates=1, cd_grid=4, cd_m=1)
    events = list(train(cfg, loaded, tmp_path / "w", source))
    assert isinstance(events[-1], Result), events[-1]
    pool = events[-1].value.pool
    assert tuple(pool.latents.shape) == (3, *loaded.codec.latent_shape(3, 32, 32))
    assert sorted(pool.captions) == sorted(sample_clip("train", i)[1] for i in range(3))
    assert "cd_loss" in [e for e in events if isinstance(e, Progress)][-1].metrics
    (videos / "c3.mp4").write_bytes((videos / "c0.mp4").read_bytes())  # a clip without its caption
    with pytest.raises(ValueError, match="without a caption file.*c3.mp4"):
        list(train(cfg, loaded, tmp_path / "v", data.PromptFile(tmp_path / "p.txt", videos)))


def test_rushes_distill_checks_its_data_before_loading_the_model(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "engine.cli", "distill", *args], capture_output=True, text=True)

    out = run("--prompts", str(tmp_path / "missing.txt"))
    assert out.returncode != 0 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "p.txt").write_text("a fox\n")
    out = run("--prompts", str(tmp_path / "p.txt"), "--method", "vsd+cd")
    assert out.returncode != 0 and "need real clips" in out.stderr
    out = run("--timesteps", "1000,1200")
    assert out.returncode != 0 and "[1000, 1200]" in out.stderr


def test_the_plug_in_registers_toyworlds_rewards_and_data():
    from engine import plugins
    from engine.reward import builtin, pixel
    from engine.reward.spec import names

    assert "toyworld" in plugins.load()
    spec, caption = sample_clip("train", 3)
    assert builtin.get("toyworld-semantic")(render(spec, 9, 64), caption) == 1.0
    assert "toyworld-colour-count" in pixel.PIXEL_REWARDS and "toyworld-soft" in names()
    assert data.source("toyworld").prompts("train", 2) == TOYWORLD.prompts("train", 2)
    assert np.isfinite(builtin.get("colourfulness")(render(spec, 3, 32)))
