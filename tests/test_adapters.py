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


WAN_NAMES = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
             "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
             "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o"}


def test_a_lora_in_the_wan_repositorys_layout_is_converted_by_diffusers_and_acts_the_same(tiny_folder, tmp_path):
    """What people share for Wan2.1: `diffusion_model.blocks.N.self_attn.q.lora_down.weight` keys."""
    engine = Engine()
    ours = _write_lora(tmp_path / "diffusers", tiny_transformer(seed=2))
    wan = {}
    for key, value in load_file(ours / "pytorch_lora_weights.safetensors").items():
        module, part = key.removeprefix("transformer.").split(".lora_")
        block, rest = module.split(".", 2)[1], module.split(".", 2)[2]
        down_up = "lora_down" if part.startswith("A") else "lora_up"
        wan[f"diffusion_model.blocks.{block}.{WAN_NAMES[rest]}.{down_up}.weight"] = value
    (tmp_path / "wan").mkdir()
    save_file(wan, tmp_path / "wan" / "community_lora.safetensors")
    a = _frames(engine, tiny_folder, lora=str(ours)).value.frames
    b = _frames(engine, tiny_folder, lora=str(tmp_path / "wan" / "community_lora.safetensors"))
    assert isinstance(b, Result), b
    assert np.abs(a.astype(int) - b.value.frames.astype(int)).max() <= 1
    save_file({"diffusion_model.nonsense.lora_down.weight": torch.zeros(2, 2)}, tmp_path / "bad.safetensors")
    refused = _frames(engine, tiny_folder, lora=str(tmp_path / "bad.safetensors"))
    assert isinstance(refused, Failed) and "bad.safetensors" in refused.message
