"""The real-checkpoint workflow end to end on a tiny random Wan2.1-shaped folder (UMT5 text
encoder, 3D Wan VAE, UniPC scheduler, saved by WanPipeline): distil a 3-step student from a prompt
file, generate with it through the engine and through plain WanPipeline, tune it."""

import json

import numpy as np
import pytest
import torch
from diffusers import WanPipeline, WanTransformer3DModel

from engine import data
from engine.distill.config import DistillConfig
from engine.distill.run import run_distillation
from engine.events import Result
from engine.generate import Engine
from engine.requests import GenerateRequest
from engine.tune.config import TuneConfig
from engine.tune.run import run_tune
from test_registry import wan_folder  # noqa: F401  (the fixture)

SIZE = {"frames": 5, "height": 32, "width": 32}


@pytest.fixture(scope="module")
def distilled(wan_folder, tmp_path_factory):  # noqa: F811
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("RUSHES_HOME", str(home))
    root = tmp_path_factory.mktemp("wan-run")
    prompts = root / "prompts.csv"
    prompts.write_text('prompt,note\n"a cat walking on grass",x\n"a red car at night",y\n"waves on a beach",z\n')
    cfg = DistillConfig(method="vsd+lrm", steps=2, batch=2, timesteps=[1000, 757, 522], student_steps=3,
                        frames=5, size=32, fake_updates=1, lrm_warmup=0, reward="colourfulness", checkpoint_every=2)
    lines = list(run_distillation(cfg, str(wan_folder), root / "student", data.PromptFile(prompts)))
    yield root / "student", json.loads(lines[-1]), root
    mp.undo()


def test_a_wan_teacher_distils_from_a_prompt_file_and_its_student_runs_in_the_engine(distilled):
    out, summary, _ = distilled
    assert summary["timesteps"] == [1000, 757, 522] and summary["student_steps"] == 3
    clip = list(Engine().generate(GenerateRequest(prompt="a cat", model=str(out), role="student", seed=0, **SIZE)))[-1]
    assert isinstance(clip, Result) and clip.value.meta["steps"] == 3 and clip.value.frames.shape == (5, 32, 32, 3)


def test_the_exported_folder_and_its_student_run_in_plain_wan_pipeline(distilled):
    out, _, _ = distilled
    entry = json.loads((out / "rushes.json").read_text())["students"]["3"]
    student = WanTransformer3DModel.from_pretrained(out / entry["folder"])
    pipe = WanPipeline.from_pretrained(out, transformer=student)
    video = pipe("a cat", num_inference_steps=3, guidance_scale=1.0, num_frames=5, height=32, width=32,
                 output_type="np", generator=torch.Generator().manual_seed(0)).frames[0]
    assert video.shape == (5, 32, 32, 3) and np.isfinite(video).all()
    teacher = WanPipeline.from_pretrained(out)  # the folder itself is the teacher's pipeline, unchanged
    assert teacher("a cat", num_inference_steps=2, num_frames=5, height=32, width=32, output_type="np").frames[0].shape \
        == (5, 32, 32, 3)


def test_the_distilled_wan_student_tunes_on_its_own_step_list(distilled, monkeypatch):
    out, _, root = distilled
    monkeypatch.setenv("RUSHES_HOME", str(root / "tune-home"))
    cfg = TuneConfig(model=str(out), reward="contrast", steps=2, batch=2, lrm_warmup=1,
                     prompts=data.read_prompts(root / "prompts.csv"))
    events = list(run_tune(cfg, root / "adapter", eval_prompts=1))
    assert isinstance(events[-1], Result), events[-1]
    meta = json.loads((root / "adapter" / "adapter.json").read_text())
    assert meta["student_steps"] == 3 and meta["steps"] == 2


def test_the_studio_generates_and_tunes_the_distilled_wan_student(distilled, monkeypatch):
    """From the studio's API on the Wan student: a clip, a tune with the user's prompts (its own
    step list), and the before/after grid on the prompts the tune was measured on."""
    import time

    from gradio_client import Client

    from engine.session import Session
    from engine.store import Store
    from studio.app import build, launch_kwargs, studio_engine

    out, _, root = distilled
    monkeypatch.setenv("RUSHES_HOME", str(root / "studio-home"))
    session = Session("wan", engine=studio_engine())
    demo = build(session, str(out))
    try:
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs())
        client = Client(url, verbose=False)
        clip = client.predict(str(out), "a cat", "", "student 3 steps", 1, 5, 32, "", 1.0, False, api_name="/generate")
        assert "student 3 steps" in clip[2]  # its own step count is a preset
        with pytest.raises(Exception, match="give your own prompts"):  # no world of its own: the prompts are needed
            client.predict("contrast", None, None, 2, 4, 1e-3, "wan", "base", "", api_name="/tune_start")
        run, _ = client.predict("contrast", None, None, 2, 4, 1e-3, "wan", "base", "a cat\na red car",
                                api_name="/tune_start")
        store, deadline = Store(root / "studio-home" / "studio.db"), time.time() + 300
        while time.time() < deadline and store.run(int(run))["status"] in ("queued", "running"):
            time.sleep(1)
        row = store.run(int(run))
        assert row["status"] == "done", row
        adapter = store.adapters(limit=1)[0]["path"]
        grid = client.predict(adapter, 1.0, api_name="/tune_before_after")
        assert len(grid) == 4 and "a cat" in grid[0]["caption"] and grid[1]["caption"].startswith("after")
    finally:
        demo.close()
        session.engine.close()
