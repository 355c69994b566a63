import numpy as np
import torch
from diffusers import WanPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from conftest import tiny_transformer
from engine.events import Failed, Result
from engine.generate import Engine
from engine.requests import GenerateRequest


def _write_lora(folder, transformer, seed=0):
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return folder


def _frames(engine, folder, **kw):
    events = list(engine.generate(GenerateRequest(prompt="a ball", model=str(folder), seed=3, steps=2, **kw)))
    return events[-1]


def test_lora_changes_output_and_is_removed_after(tiny_folder, tmp_path):
    engine = Engine()
    lora = _write_lora(tmp_path / "lora", tiny_transformer(seed=2))
    before = _frames(engine, tiny_folder).value.frames
    with_lora = _frames(engine, tiny_folder, lora=str(lora), lora_scale=1.0)
    assert isinstance(with_lora, Result) and with_lora.value.meta["lora"] == str(lora)
    assert not np.array_equal(before, with_lora.value.frames)
    assert np.array_equal(before, _frames(engine, tiny_folder).value.frames)
    zero = _frames(engine, tiny_folder, lora=str(lora), lora_scale=0.0).value.frames
    assert np.array_equal(before, zero)


def _corrupt(src, dst, fn):
    dst.mkdir()
    state = load_file(src / "pytorch_lora_weights.safetensors")
    save_file(fn(state), dst / "pytorch_lora_weights.safetensors")
    return dst


def test_bad_adapters_refused_and_model_unchanged(tiny_folder, tmp_path):
    engine = Engine()
    good = _write_lora(tmp_path / "good", tiny_transformer(seed=2))
    before = _frames(engine, tiny_folder).value.frames
    nan = _corrupt(good, tmp_path / "nan", lambda s: {k: v.fill_(float("nan")) for k, v in s.items()})
    wrong = _corrupt(good, tmp_path / "wrong", lambda s: {k.replace("blocks.0", "blocks.9"): v for k, v in s.items()})
    shape = _corrupt(good, tmp_path / "shape", lambda s: {k: torch.zeros(4, 5) if "lora_A" in k else v for k, v in s.items()})
    truncated = tmp_path / "trunc"
    truncated.mkdir()
    data = (good / "pytorch_lora_weights.safetensors").read_bytes()
    (truncated / "pytorch_lora_weights.safetensors").write_bytes(data[: len(data) // 2])
    for bad, named in [(nan, "non-finite"), (wrong, "blocks.9"), (shape, "shape"), (truncated, "truncated")]:
        event = _frames(engine, tiny_folder, lora=str(bad))
        assert isinstance(event, Failed) and named in event.message, event
    assert np.array_equal(before, _frames(engine, tiny_folder).value.frames)
