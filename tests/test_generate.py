import threading

import diffusers
import numpy as np
import pytest
import torch

from engine.events import Failed, Preview, Progress, Result
from engine.generate import Engine
from engine.model import FlowModel
from engine.requests import GenerateRequest
from engine.sampling import run_to_end, teacher_sample
from engine.textenc import load_minilm


@pytest.fixture(scope="module")
def engine():
    return Engine()


def _clip(engine, folder, **kw):
    events = list(engine.generate(GenerateRequest(prompt="a red ball moving left", model=str(folder), **kw)))
    assert isinstance(events[-1], Result), events[-1]
    return events


def test_same_seed_same_frames_other_seed_differs(engine, tiny_folder):
    a = _clip(engine, tiny_folder, seed=7, steps=4)[-1].value
    b = _clip(engine, tiny_folder, seed=7, steps=4)[-1].value
    c = _clip(engine, tiny_folder, seed=8, steps=4)[-1].value
    assert a.frames.shape == (5, 32, 32, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    # the clip keeps its final latents (a latent reward model scores those): they decode to its frames
    assert a.latents.device.type == "cpu" and torch.equal(a.latents, b.latents)
    assert np.array_equal(engine.model(str(tiny_folder)).codec.decode(a.latents)[0], a.frames)


def test_student_uses_its_step_list_and_counts_nfe(engine, tiny_folder):
    for steps in (1, 2, 4):
        meta = _clip(engine, tiny_folder, seed=1, steps=steps)[-1].value.meta
        assert meta["nfe"] == steps and meta["steps"] == steps
        assert meta["timesteps"][0] == 1000 and len(meta["timesteps"]) == steps
        assert set(meta["timings"]) == {"text_encode_s", "denoise_s", "decode_s", "total_s"}


def test_teacher_counts_cfg_passes(engine, tiny_folder):
    meta = _clip(engine, tiny_folder, seed=1, role="teacher", steps=3, guidance=4.0)[-1].value.meta
    assert meta["nfe"] == 6 and meta["guidance"] == 4.0
    meta = _clip(engine, tiny_folder, seed=1, role="teacher", steps=3, guidance=1.0)[-1].value.meta
    assert meta["nfe"] == 3  # w = 1 needs no unconditional pass


def test_teacher_euler_matches_hand_loop(engine, tiny_folder):
    loaded = engine.model(str(tiny_folder))
    flow = loaded.teacher
    text = loaded.text.encode(["a cat"])
    uncond = loaded.text.encode([""])
    noise = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    sig = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    out = run_to_end(teacher_sample(flow, noise, sig, text, uncond, 3.0))
    x = noise
    for s, s_next in [(1.0, 0.5), (0.5, 0.0)]:
        t = torch.tensor([s])
        v_c = flow.velocity(x, t, text)
        v_u = flow.velocity(x, t, uncond)
        x = x + (s_next - s) * (v_u + 3.0 * (v_c - v_u))
    assert torch.allclose(out, x, atol=1e-4)


def test_guidance_only_inside_its_levels(engine, tiny_folder):
    loaded = engine.model(str(tiny_folder))
    flow = loaded.teacher
    text, uncond = loaded.text.encode(["a cat"]), loaded.text.encode([""])
    noise = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    sig = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    flow.nfe = 0
    out = run_to_end(teacher_sample(flow, noise, sig, text, uncond, 3.0, guidance_levels=(0.0, 0.6)))
    assert flow.nfe == 3  # the step at level 1 runs the conditional pass alone
    x = noise + (0.5 - 1.0) * flow.velocity(noise, torch.tensor([1.0]), text)
    v_c, v_u = flow.velocity(x, torch.tensor([0.5]), text), flow.velocity(x, torch.tensor([0.5]), uncond)
    x = x + (0.0 - 0.5) * (v_u + 3.0 * (v_c - v_u))
    assert torch.allclose(out, x, atol=1e-4)
    with pytest.raises(ValueError, match="guidance_levels"):
        run_to_end(teacher_sample(flow, noise, sig, text, uncond, 3.0, guidance_levels=(0.8, 0.2)))


def test_progress_preview_and_cancel(engine, tiny_folder):
    events = _clip(engine, tiny_folder, seed=1, steps=4, preview=True)
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3, 4]
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and previews[-1].frames.dtype == np.uint8
    cancel = threading.Event()
    gen = engine.generate(GenerateRequest(prompt="x", model=str(tiny_folder), role="teacher", steps=6), cancel)
    first = next(gen)
    assert isinstance(first, Progress)
    cancel.set()
    rest = list(gen)
    assert isinstance(rest[-1], Failed) and rest[-1].kind == "cancelled"
    assert not any(isinstance(e, Result) for e in rest)


@pytest.mark.parametrize("kw, named", [
    ({"prompt": ""}, "prompt"), ({"height": 40}, "40"), ({"frames": 0}, "frames"),
    ({"steps": 10**6}, "1000000"), ({"steps": 3}, "3-step"), ({"frames": 1000}, "1000"),
    ({"seed": -1}, "-1"), ({"guidance": float("nan")}, "nan"), ({"prompt": "a\x00b"}, "control"),
    ({"frames": 33}, "frames 33"),  # within the folder's max_frames, past the tiny transformer's 32 rope positions
    ({"frames": 33, "role": "teacher"}, "frames 33"),
])
def test_bad_input_fails_before_compute(engine, tiny_folder, kw, named):
    req = {"prompt": "ok", "model": str(tiny_folder)} | kw
    events = list(engine.generate(GenerateRequest(**req)))
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert named in events[0].message


def test_folder_loads_with_plain_diffusers(tiny_folder):
    encoder, tokenizer = load_minilm()
    pipe = diffusers.DiffusionPipeline.from_pretrained(tiny_folder, text_encoder=encoder, tokenizer=tokenizer)
    assert type(pipe).__name__ == "WanPipeline"
    assert pipe.transformer.config.text_dim == 384


def test_text_cache_returns_same_states(engine, tiny_folder):
    text = engine.model(str(tiny_folder)).text
    a = text.encode(["a blue square", "a red ball"])
    b = text.encode(["a red ball"])
    assert a.shape == (2, 32, 384) and torch.equal(a[1], b[0])
    assert torch.all(a[0, -1] == 0)  # padding positions are zeroed


def test_flow_model_predicts_float32(engine, tiny_folder):
    flow: FlowModel = engine.model(str(tiny_folder)).teacher
    x = torch.randn(1, 4, 2, 4, 4)
    out = flow.predict_x0(x, torch.tensor([0.5]), torch.zeros(1, 32, 384))
    assert out.dtype == torch.float32 and out.shape == x.shape


def test_bounds_are_printed_as_a_person_reads_them():
    from engine import knobs

    with pytest.raises(ValueError, match=r"seed must be in \[0, 4294967295\], got 4294967296"):
        knobs.check("seed", 2**32)
    with pytest.raises(ValueError, match=r"lora_scale must be in \[-4, 4\], got 9.5"):
        knobs.check("lora_scale", 9.5)


def test_the_create_tab_refuses_zero_frames_instead_of_using_the_default():
    import gradio as gr

    from studio.create import build_request

    with pytest.raises(gr.Error, match=r"frames must be in \[1, 257\], got 0"):
        build_request("toyworld", "a red ball", "", "student 4 steps", "", 0, 64, "", 1.0)
    with pytest.raises(gr.Error, match=r"height must be in \[16, 2048\], got 0"):
        build_request("toyworld", "a red ball", "", "student 4 steps", "", 17, 0, "", 1.0)
    assert build_request("toyworld", "a red ball", "", "student 4 steps", "", None, None, "", 1.0).frames is None


def test_a_bf16_network_sees_its_timestep_exactly():
    """Timesteps go in as float32 (as diffusers' pipelines pass them): in bf16, 757 would be 756."""
    import torch

    from conftest import tiny_transformer
    from engine.model import FlowModel

    net = tiny_transformer().to(torch.bfloat16)
    seen = []
    net.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["timestep"]), with_kwargs=True)
    FlowModel(net).velocity(torch.zeros(1, 4, 2, 4, 4), torch.tensor([0.757]), torch.zeros(1, 8, 384))
    assert seen[0].dtype == torch.float32 and seen[0].item() == pytest.approx(757.0)
    assert torch.tensor(757.0).to(torch.bfloat16).item() == 756.0  # what the old cast gave
