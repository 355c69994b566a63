"""Save a tuned LoRA in diffusers' format with the studio's metadata in the file header.

Keys are `transformer.<module>.lora_A.weight` / `lora_B.weight` (what `save_lora_weights`
writes and `load_lora_weights` reads); alpha / rank is folded into lora_B so the file means
the same at scale 1 for any loader. Metadata (reward, base model, steps, metrics) goes in the
safetensors header and in `adapter.json`; both are written under temp names and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from engine.adapters import PREFIX, WEIGHTS_NAME


def save_adapter(transformer, adapter_name: str, rank: int, alpha: float, out: Path, metadata: dict) -> Path:
    state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    scale = alpha / rank
    tensors = {}
    for key, value in state.items():
        key = key.replace(f".{adapter_name}.", ".")
        value = value.detach().float().cpu().contiguous()
        tensors[PREFIX + key] = value * scale if ".lora_B." in key else value
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"rushes": json.dumps(metadata, default=str)})
    (tmp / "adapter.json").write_text(json.dumps(metadata, indent=2, default=str))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
