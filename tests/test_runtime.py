"""Runtime options (dtype, offload, VAE tiling/slicing, regional compile), the memory estimate,
and out-of-memory handling (RELIABILITY row 15's engine side), on the CPU with a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import memory
from engine.events import Failed, Result
from engine.generate import Engine
from engine.requests import GenerateRequest
from engine.runtime import RuntimeOptions


def _frames(engine, folder, **kw):
    req = GenerateRequest(prompt="a red ball", model=str(folder), role="student", steps=2, seed=5, **kw)
    event = list(engine.generate(req))[-1]
    assert isinstance(event, Result), getattr(event, "message", event)
    return event.value


@pytest.mark.parametrize("bad, named", [
    ({"dtype": "float8"}, "float8"), ({"device": "cuda:0"}, "no CUDA"), ({"device": "tpu"}, "tpu"),
    ({"memory_fraction": 1.5}, "1.5"), ({"decode_dtype": "int8"}, "int8")])
def test_bad_runtime_options_are_named(bad, named):
    if "cuda" in str(bad) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match=named):
        RuntimeOptions(**bad)


def test_offload_and_vae_options_give_the_same_clip(tiny_folder):
    base = _frames(Engine(), tiny_folder)
    for opts in (RuntimeOptions(offload=True), RuntimeOptions(vae_slicing=True), RuntimeOptions(vae_tiling=True)):
        clip = _frames(Engine(opts), tiny_folder)
        assert np.abs(clip.frames.astype(int) - base.frames.astype(int)).max() <= 1, opts
        assert clip.meta["runtime"] == opts.describe()
    loaded = Engine(RuntimeOptions(vae_slicing=True, vae_tiling=True)).model(str(tiny_folder))
    assert loaded.codec.vae.use_slicing and loaded.codec.vae.use_tiling


def test_bf16_is_close_to_the_float32_default(tiny_folder):
    base = _frames(Engine(), tiny_folder)
    half = _frames(Engine(RuntimeOptions(dtype="bfloat16")), tiny_folder)
    assert half.meta["runtime"]["dtype"] == "bfloat16"
    assert np.abs(half.frames.astype(int) - base.frames.astype(int)).mean() < 3


def test_regional_compile_matches_eager(tiny_folder):
    eager = _frames(Engine(), tiny_folder)
    engine = Engine(RuntimeOptions(compile=True))
    compiled = _frames(engine, tiny_folder)
    transformer = engine.model(str(tiny_folder)).students[2][0].transformer
    assert transformer._rushes_compiled
    assert np.abs(compiled.frames.astype(int) - eager.frames.astype(int)).max() <= 2


def test_memory_estimate_follows_the_settings(tiny_folder):
    engine = Engine()

    def est(opts=None, **kw):
        e = Engine(opts) if opts else engine
        return e.estimate(GenerateRequest(prompt="x", model=str(tiny_folder), seed=0, **kw))[0]

    small, large = est(role="student", steps=4, height=32, width=32), est(role="student", steps=4, height=128, width=128)
    assert 0 < small.peak < large.peak and large.denoise == pytest.approx(16 * small.denoise, rel=0.01)
    student, teacher = est(role="student", steps=4), est(role="teacher", steps=4, guidance=4.0)
    assert teacher.denoise == 2 * student.denoise  # CFG: one batched [uncond; cond] pass
    assert est(role="teacher", steps=4, guidance=1.0).denoise == student.denoise
    offload = est(RuntimeOptions(offload=True), role="student", steps=4)
    assert offload.weights < student.weights
    sliced = est(RuntimeOptions(vae_slicing=True), role="student", steps=4, frames=9)
    assert sliced.decode < est(role="student", steps=4, frames=9).decode
    _, free = engine.estimate(GenerateRequest(prompt="x", model=str(tiny_folder), seed=0))
    assert free and "GB free" in student.describe(free)
    assert "likely too much" in memory.MemoryEstimate(10 * 2**30, 0, 0).describe(free=2**30)


def test_out_of_memory_is_friendly_and_the_next_request_works(tiny_folder):
    engine = Engine()
    before = _frames(engine, tiny_folder)
    transformer = engine.model(str(tiny_folder)).students[2][0].transformer
    original = transformer.forward
    calls = []

    def exhausted(*args, **kwargs):
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")  # what torch raises

    transformer.forward = exhausted
    req = GenerateRequest(prompt="a red ball", model=str(tiny_folder), role="student", steps=2, seed=5, frames=9)
    event = list(engine.generate(req))[-1]
    transformer.forward = original
    assert isinstance(event, Failed) and event.kind == "oom" and calls
    assert "out of memory" in event.message and "9 frames at 32x32" in event.message
    assert "VAE tiling or CPU offload" in event.message and "GB peak" in event.message
    after = _frames(engine, tiny_folder)
    assert np.array_equal(after.frames, before.frames)


def test_other_runtime_errors_are_not_mistaken_for_oom(tiny_folder):
    engine = Engine()
    transformer = engine.model(str(tiny_folder)).students[2][0].transformer

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    transformer.forward = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(engine.generate(GenerateRequest(prompt="x", model=str(tiny_folder), role="student", steps=2, seed=1)))


def test_cli_runtime_flags(tiny_folder, tmp_path, capsys):
    from engine.cli import main

    if not torch.cuda.is_available():
        assert main(["generate", "--model", str(tiny_folder), "--prompt", "x", "--device", "cuda",
                     "--out", str(tmp_path / "a.mp4")]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_folder), "--prompt", "x", "--offload", "--vae-slicing",
                 "--out", str(tmp_path / "b.mp4"), "--json"]) == 0
    assert (tmp_path / "b.mp4").exists()


def test_decode_dtype_auto_follows_native_bf16(monkeypatch, tiny_folder):
    from engine import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)
    assert RuntimeOptions().torch_decode_dtype == torch.bfloat16
    assert RuntimeOptions().describe()["decode_dtype"] == "bfloat16"
    assert RuntimeOptions(decode_dtype="float32").torch_decode_dtype == torch.float32
    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)  # emulated bf16 is slower: keep fp32
    assert RuntimeOptions().torch_decode_dtype is None
    assert RuntimeOptions().describe()["decode_dtype"] == "float32"
    fp32 = _frames(Engine(RuntimeOptions(decode_dtype="float32")), tiny_folder)
    bf16 = _frames(Engine(RuntimeOptions(decode_dtype="bfloat16")), tiny_folder)
    assert bf16.meta["runtime"]["decode_dtype"] == "bfloat16"
    assert np.abs(bf16.frames.astype(int) - fp32.frames.astype(int)).mean() < 1  # random tiny VAE: max 6


def test_generation_in_a_worker_thread_builds_no_autograd_graph(tiny_folder):
    """Grad mode is per thread and on by default; the studio generates in worker threads, where a
    recorded graph cost ~50% more time (and on a GPU, the activations' memory)."""
    import threading

    engine = Engine()
    transformer = engine.model(str(tiny_folder)).students[2][0].transformer
    seen = []
    hook = transformer.register_forward_hook(lambda m, i, out: seen.append(
        (torch.is_grad_enabled(), (out[0] if isinstance(out, tuple) else out.sample).requires_grad)))
    try:
        worker = threading.Thread(target=_frames, args=(engine, tiny_folder))
        worker.start()
        worker.join()
    finally:
        hook.remove()
    assert len(seen) == 2 and seen == [(False, False)] * 2, seen


def test_an_in_process_engine_loads_on_its_first_request(tiny_folder):
    engine = Engine()
    assert engine.preload(str(tiny_folder)) is None and not engine._models
    assert engine.call(lambda e, name: e.model(name), str(tiny_folder)) is engine.model(str(tiny_folder))


def test_chunked_frame_decode_matches_one_call():
    """A batch of clips decodes in frame chunks (engine.codec.FRAME_CHUNK) to the same pixels as
    one VAE call over every frame, the differentiable path included."""
    from engine.codec import VideoCodec
    from tests.conftest import tiny_vae

    codec = VideoCodec(tiny_vae())
    z = torch.randn(3, *codec.latent_shape(5, 16, 16), generator=torch.Generator().manual_seed(0))
    codec.frame_chunk = 15
    whole = codec.decode_float(z)
    codec.frame_chunk = 4  # 15 frames -> calls of 4, 4, 4, 3
    chunked = codec.decode_float(z)
    assert chunked.shape == whole.shape == (3, 3, 5, 16, 16)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    z.requires_grad_(True)
    codec.decode_float(z).square().mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_training_autocast_is_bf16_only_where_the_device_runs_it_natively(monkeypatch):
    """On a CPU without oneDNN bf16, autocast emulates bf16 and a teacher step takes ~20x as long
    (bench/amp.py), so the bake and the distillation trainer fall back to float32 there."""
    from engine import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    with runtime.bf16_autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)
    with runtime.bf16_autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with runtime.bf16_autocast("cpu", wanted=False):
        assert not torch.is_autocast_enabled("cpu")


def test_a_wan_decode_that_fails_part_way_keeps_no_cached_activations():
    """The Wan VAE decodes frame by frame through a feature cache on itself. A decode that failed
    part-way (out of memory) kept that cache, and under a tune its autograd graph: about 100 GB
    stayed allocated on an H200 after a failed pixel-reward step (bench/gpu.py --tune-only)."""
    from diffusers import AutoencoderKLWan

    from engine.codec import VideoCodec

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.1] * 4, latents_std=[2.0] * 4)
    codec = VideoCodec(vae)
    latents = torch.randn(1, 4, 3, 4, 4)
    expected = codec.decode_float(latents).detach()
    original, calls = vae.decoder.forward, []

    def fails_on_the_second_frame(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(*args, **kwargs)

    vae.decoder.forward = fails_on_the_second_frame
    with pytest.raises(torch.OutOfMemoryError):
        codec.decode_float(latents.clone().requires_grad_())
    vae.decoder.forward = original
    assert len(calls) == 2 and all(feature is None for feature in vae._feat_map)
    assert torch.allclose(codec.decode_float(latents), expected)


def test_allocation_failures_of_the_gpu_libraries_count_as_out_of_memory():
    for text in ("cuDNN error: CUDNN_STATUS_ALLOC_FAILED", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling "
                 "`cublasCreate(handle)`", "cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE"):
        assert memory.is_out_of_memory(RuntimeError(text)), text
    assert not memory.is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM"))


def test_the_memory_cap_names_the_card_by_index(monkeypatch):
    """torch.cuda.set_per_process_memory_fraction refuses a bare "cuda" device (it wants an index):
    on an H200 every request under a memory cap failed with that until this was fixed. The real
    call runs in tests/test_gpu.py where a GPU is; here torch's CUDA calls are recorded."""
    from types import SimpleNamespace

    from engine import runtime

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda fraction, device: calls.append(
        (fraction, device)))
    loaded = SimpleNamespace(codec=SimpleNamespace(vae=object()))
    for device in ("cuda", "cuda:1", "auto"):
        runtime.apply(loaded, RuntimeOptions(device=device, memory_fraction=0.25))
    assert calls == [(0.25, 0), (0.25, 1), (0.25, 0)]
