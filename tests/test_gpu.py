"""The GPU path on a real CUDA device: bf16 generation and RELIABILITY row 15 (out of GPU memory:
a friendly error, memory released, the next normal request succeeds) with a real allocation
failure under a capped memory fraction, not an injected exception. Skipped where there is no GPU
(CI); run on a lent GPU machine with `python -m pytest tests/test_gpu.py`. The CPU side of the
same paths is tested in test_runtime.py."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from engine.events import Failed, Result
from engine.generate import Engine
from engine.requests import GenerateRequest
from engine.runtime import RuntimeOptions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

NORMAL = dict(role="student", steps=2, seed=5)  # the folder's default size: 5 frames at 32x32
TOO_BIG = dict(role="teacher", steps=2, seed=5, frames=29, height=128, width=128)  # near the maximum


def _generate(engine, folder, **kw):
    return list(engine.generate(GenerateRequest(prompt="a red ball", model=str(folder), **kw)))[-1]


def _reserved_peak(engine, folder, **kw):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    event = _generate(engine, folder, **kw)
    assert isinstance(event, Result), getattr(event, "message", event)
    return event.value, torch.cuda.max_memory_reserved()


def test_bf16_on_the_gpu_is_close_to_float32_on_the_cpu(tiny_folder):
    cpu = _generate(Engine(), tiny_folder, **NORMAL)
    gpu = _generate(Engine(RuntimeOptions(device="cuda", dtype="bfloat16")), tiny_folder, **NORMAL)
    assert isinstance(gpu, Result) and gpu.value.meta["runtime"]["device"] == "cuda"
    assert np.abs(gpu.value.frames.astype(int) - cpu.value.frames.astype(int)).mean() < 3


def test_real_out_of_memory_is_friendly_and_the_next_request_works(tiny_folder):
    engine = Engine(RuntimeOptions(device="cuda"))
    normal, small = _reserved_peak(engine, tiny_folder, **NORMAL)
    _, big = _reserved_peak(engine, tiny_folder, **TOO_BIG)
    # the setup: the big request needs more than the allocator's block rounding could hide (on an
    # H200 the peaks were 138 MiB and 180 MiB, the weights and CUDA's workspaces in both)
    assert big - small > 16 * 2**20, (small, big)
    del engine
    gc.collect()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    try:  # a cap between the two peaks: the normal request fits, the big one cannot
        engine = Engine(RuntimeOptions(device="cuda", memory_fraction=(small + big) / 2 / total))
        first = _generate(engine, tiny_folder, **NORMAL)
        assert isinstance(first, Result), getattr(first, "message", first)
        held = torch.cuda.memory_allocated()
        event = _generate(engine, tiny_folder, **TOO_BIG)
        assert isinstance(event, Failed) and event.kind == "oom", event
        assert "out of memory on cuda" in event.message and "29 frames at 128x128" in event.message
        assert "memory was released" in event.message and "GB peak" in event.message
        # nothing of the failed request is still held (a little slack: CUDA libraries keep workspaces)
        assert torch.cuda.memory_allocated() <= held + 8 * 2**20, (held, torch.cuda.memory_allocated())
        after = _generate(engine, tiny_folder, **NORMAL)
        assert isinstance(after, Result), getattr(after, "message", after)
        assert np.abs(after.value.frames.astype(int) - normal.frames.astype(int)).max() <= 1
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
