"""Add a causal student to a pipeline folder: its weights and rushes.json's `stream` entry.

The student is stored whole (`students/causal/`) or, with a rank, as a LoRA on the network of
one of the folder's students (`students/causal-lora/`; on toyworld a whole network would break
the 30 MB budget). Written as the other students are (engine/distill/export.py): the weights into
a temp folder renamed into place, then rushes.json replaced, so a reader sees the old student or
the whole new one.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.adapters import WEIGHTS_NAME
from engine.distill.export import write_folder
from engine.distill.extract import extract
from engine.stream.cache import Window

WHOLE, LORA = Path("students") / "causal", Path("students") / "causal-lora"


def add_causal_student(folder: Path, network, window: Window, timesteps: list[int], base_steps: int | None = None,
                       rank: int | None = None, record: dict | None = None) -> dict:
    """Save `network` as `folder`'s causal student; with `rank`, as a LoRA of that rank on the
    `base_steps`-step student's network (the one it was distilled from). Returns the entry (and
    the LoRA's extraction report under "lora_report")."""
    import diffusers

    info_path = folder / "rushes.json"
    info = json.loads(info_path.read_text())
    entry = {"timesteps": list(timesteps), "chunk": window.chunk, "sink": window.sink, "recent": window.recent,
             "retime": window.retime}
    report = {}
    if rank is None:
        write_folder(folder / WHOLE, lambda tmp: copy.deepcopy(network).to(torch.bfloat16).save_pretrained(
            tmp, safe_serialization=True))
        entry["folder"] = str(WHOLE)
    else:
        source = info.get("students", {}).get(str(base_steps))
        if source is None or source.get("lora"):
            raise ValueError(f"{folder} has no {base_steps}-step student network to put the causal LoRA on")
        base = diffusers.WanTransformer3DModel.from_pretrained(folder / source["folder"], use_safetensors=True)
        state, report = extract(base, network, rank)
        write_folder(folder / LORA, lambda tmp: save_file(
            {k: v.to(torch.bfloat16) for k, v in state.items()}, tmp / WEIGHTS_NAME,
            metadata={"rushes": json.dumps({"base_steps": base_steps} | report)}))
        entry |= {"folder": source["folder"], "lora": str(LORA)}
    old = info.get("stream", {})
    info["stream"] = entry
    tmp = folder / ".rushes.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, info_path)
    for key, sub in (("folder", WHOLE), ("lora", LORA)):  # the previous student's files no entry uses now
        if old.get(key) == str(sub) and entry.get(key) != str(sub):
            shutil.rmtree(folder / sub, ignore_errors=True)
    if record is not None:
        bake = folder / "bake.json"
        data = json.loads(bake.read_text()) if bake.exists() else {}
        bake.write_text(json.dumps(data | {"student_causal": record | report}, indent=2))
    return entry | ({"lora_report": report} if report else {})
