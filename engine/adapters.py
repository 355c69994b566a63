"""LoRA adapters in diffusers format: validated before anything touches the loaded model.

An adapter is a folder holding `pytorch_lora_weights.safetensors` (keys `transformer.<module>.
lora_A.weight` / `lora_B.weight`, as `WanPipeline.save_lora_weights` writes them) or that file
itself. The layouts people share for Wan2.1 (the original Wan repository's
`diffusion_model.blocks.N.self_attn.q.lora_down.weight`, and the others diffusers knows) are
converted by diffusers' own `WanPipeline.lora_state_dict` first. `read` refuses a bad header, truncated data, keys or shapes that do not fit the base
transformer and non-finite values, so a refused load leaves the pipeline exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import torch
from safetensors import safe_open

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
PREFIX = "transformer."


def weights_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / WEIGHTS_NAME
    if not p.is_file():
        raise ValueError(f"no LoRA weights at {path} (expected a folder with {WEIGHTS_NAME} or the file)")
    if p.suffix != ".safetensors":
        raise ValueError(f"LoRA weights must be a .safetensors file, got {p.name}")
    return p


def _check_header(path: Path) -> dict:
    """Parse the safetensors header ourselves first: a clear error for garbage or truncation."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"not a safetensors file (too short): {path}")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise ValueError(f"not a safetensors file (bad header length {n}): {path}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"not a safetensors file (header is not JSON): {path}") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ValueError(f"truncated safetensors file ({size} bytes, header promises {8 + n + end}): {path}")
    return header.get("__metadata__") or {}


def check_file(path: str | Path) -> Path:
    """Cheap checks that need no model: the file exists, is safetensors, and is whole."""
    p = weights_path(path)
    _check_header(p)
    return p


def read(path: str | Path, transformer) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata) of a LoRA that fits `transformer`; ValueError otherwise."""
    p = check_file(path)
    metadata = _check_header(p)
    state = {}
    with safe_open(str(p), framework="pt") as f:
        for key in f.keys():
            state[key] = f.get_tensor(key)
    if not state:
        raise ValueError(f"LoRA file holds no tensors: {p}")
    if not all(k.startswith(PREFIX) for k in state):  # another layout: diffusers converts it
        state = _converted(p)
    modules = dict(transformer.named_modules())
    for key, value in state.items():
        if not key.startswith(PREFIX) or ".lora_" not in key:
            raise ValueError(f"not a transformer LoRA key: {key!r} in {p.name}")
        module_name, rest = key[len(PREFIX):].split(".lora_", 1)
        base = modules.get(module_name)
        if base is None or not hasattr(base, "weight"):
            raise ValueError(f"LoRA does not fit this model: no module {module_name!r}")
        out_f, in_f = base.weight.shape[:2]
        if rest.startswith("A") and value.shape[1] != in_f or rest.startswith("B") and value.shape[0] != out_f:
            raise ValueError(f"LoRA does not fit this model: {key} has shape {tuple(value.shape)}")
        if not torch.isfinite(value).all():
            raise ValueError(f"LoRA holds non-finite values in {key}")
    return state, metadata


def _converted(path: Path) -> dict[str, torch.Tensor]:
    """A LoRA in a layout other than diffusers' (e.g. the Wan repository's), converted by diffusers."""
    from diffusers import WanPipeline

    try:
        state = WanPipeline.lora_state_dict(str(path))
    except (ValueError, KeyError, RuntimeError, IndexError) as err:
        raise ValueError(f"LoRA {path.name} is in a layout diffusers cannot convert for Wan: {err}") from None
    state = state[0] if isinstance(state, tuple) else state
    return {k: v for k, v in state.items()}


@contextlib.contextmanager
def applied(transformer, path: str | Path | None, scale: float = 1.0, name: str = "user"):
    """Apply a validated LoRA for the duration of the block, then remove it again."""
    if path is None:
        yield {}
        return
    state, metadata = read(path, transformer)
    transformer.load_lora_adapter(state, prefix="transformer", adapter_name=name)
    try:
        transformer.set_adapters([name], weights=[scale])
        yield metadata
    finally:
        transformer.delete_adapters([name])
