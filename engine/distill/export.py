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
        _record(out, steps, record)
    return out


def alias_student(folder: Path, steps: int, source_steps: int, timesteps: list[int], record: dict | None = None) -> Path:
    """Serve `steps` steps with the `source_steps` student's network on its own timestep list
    (no new weights: rushes.json points both entries at one folder)."""
    info_path = folder / "rushes.json"
    info = json.loads(info_path.read_text())
    source = info.get("students", {}).get(str(source_steps))
    if source is None:
        raise ValueError(f"{folder} has no {source_steps}-step student to serve {steps} steps with")
    old = info["students"].get(str(steps), {}).get("folder")
    info["students"][str(steps)] = {"folder": source["folder"], "timesteps": list(timesteps)}
    tmp_info = folder / ".rushes.json.tmp"
    tmp_info.write_text(json.dumps(info, indent=2))
    os.replace(tmp_info, info_path)
    if old and old != source["folder"] and old not in [e["folder"] for e in info["students"].values()]:
        shutil.rmtree(folder / old, ignore_errors=True)
    if record is not None:
        _record(folder, steps, record)
    return folder


def _record(folder: Path, steps: int, record: dict) -> None:
    """Note how the `steps`-step student was made in the folder's bake.json."""
    bake_path = folder / "bake.json"
    data = json.loads(bake_path.read_text()) if bake_path.exists() else {}
    data[f"student_{steps}step"] = record
    bake_path.write_text(json.dumps(data, indent=2))
