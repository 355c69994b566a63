"""Add a distilled student to a pipeline folder: `students/<n>step/` plus its rushes.json entry.

Written atomically: the transformer goes to a temp folder that is renamed into place, then
rushes.json is replaced. Distilling into a new folder first copies the base pipeline.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch


def add_student(base: Path, student, steps: int, timesteps: list[int], out: Path | None = None,
                dtype: torch.dtype = torch.bfloat16, record: dict | None = None) -> Path:
    """Save `student` (a diffusers transformer) as the `steps`-step student of `out` (or `base`)."""
    out = out or base
    if out.resolve() != base.resolve():
        tmp_copy = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp_copy, ignore_errors=True)
        shutil.copytree(base, tmp_copy)
        if out.exists():
            shutil.rmtree(out)
        tmp_copy.rename(out)
    sub = Path("students") / f"{steps}step"
    tmp = out / "students" / f".{steps}step.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(student).to(dtype).save_pretrained(tmp, safe_serialization=True)
    final = out / sub
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    info_path = out / "rushes.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info.setdefault("students", {})[str(steps)] = {"folder": str(sub), "timesteps": list(timesteps)}
    tmp_info = out / ".rushes.json.tmp"
    tmp_info.write_text(json.dumps(info, indent=2))
    os.replace(tmp_info, info_path)
    if record is not None:
        bake_path = out / "bake.json"
        data = json.loads(bake_path.read_text()) if bake_path.exists() else {}
        data[f"student_{steps}step"] = record
        bake_path.write_text(json.dumps(data, indent=2))
    return out
