"""Add a distilled student to a pipeline folder: `students/<n>step/` plus its rushes.json entry.

Written atomically: the transformer goes to a temp folder that is renamed into place, then
rushes.json is replaced. Distilling into a new folder first copies the base pipeline.
A student distilled from another student can instead be stored as a LoRA on that student's
network (`students/<n>step-lora/`, entry `{"folder": <base>, "lora": <lora folder>}`): a few MB
where a whole network would not fit the model's size budget.
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
from engine.distill.extract import extract


def add_student(base: Path, student, steps: int, timesteps: list[int], out: Path | None = None,
                dtype: torch.dtype = torch.bfloat16, record: dict | None = None,
                noise_frame_share: float = 0.0) -> Path:
    """Save `student` (a diffusers transformer) as the `steps`-step student of `out` (or `base`);
    a `noise_frame_share` it was trained with goes into its entry, so its sampler draws the same."""
    out = target_folder(base, out)
    sub = Path("students") / f"{steps}step"
    write_folder(out / sub, lambda tmp: copy.deepcopy(student).to(dtype).save_pretrained(tmp, safe_serialization=True))
    _set_entry(out, steps, {"folder": str(sub), "timesteps": list(timesteps)} | _noise(noise_frame_share))
    info = json.loads((out / "rushes.json").read_text())
    for other, entry in info["students"].items():  # a LoRA on the network just replaced is stale
        if entry.get("lora") and entry["folder"] == str(sub):
            _set_entry(out, int(other), None)
    stream = info.get("stream", {})
    if stream.get("lora") and stream["folder"] == str(sub):  # so is a causal student stored as one
        info["stream"] = {}
        tmp_info = out / ".rushes.json.tmp"
        tmp_info.write_text(json.dumps(info, indent=2))
        os.replace(tmp_info, out / "rushes.json")
        shutil.rmtree(out / stream["lora"], ignore_errors=True)
    if record is not None:
        _record(out, steps, record)
    return out


def _noise(share: float) -> dict:
    """The entry's starting-noise key: none for iid noise (entries older than the knob read alike)."""
    return {"noise_frame_share": share} if share else {}


def target_folder(base: Path, out: Path | None) -> Path:
    """The folder a student is written into: `base` itself, or `out` replaced by a copy of `base`."""
    out = out or base
    if out.resolve() != base.resolve():
        write_folder(out, lambda tmp: shutil.copytree(base, tmp, dirs_exist_ok=True))
    return out


def write_folder(final: Path, write) -> None:
    """Fill a hidden sibling of `final` with `write(tmp)`, then put it in `final`'s place: a
    reader sees the old folder or the whole new one, never a half-written one."""
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def add_student_lora(base: Path, student, steps: int, timesteps: list[int], base_steps: int, rank: int,
                     out: Path | None = None, record: dict | None = None, noise_frame_share: float = 0.0) -> dict:
    """Save `student` as a rank-`rank` LoRA on the network of the `base_steps`-step student (the
    one it was distilled from) of `out` (or `base`); returns the extraction report
    (engine.distill.extract). A LoRA always sits on a whole network: when the base student is
    itself a LoRA on one, the new LoRA is taken against that network and so carries both changes."""
    import diffusers

    folder = target_folder(base, out)
    info = json.loads((folder / "rushes.json").read_text())
    source = info.get("students", {}).get(str(base_steps))
    if source is None:
        raise ValueError(f"{folder} has no {base_steps}-step student network to put a LoRA on")
    base = diffusers.WanTransformer3DModel.from_pretrained(folder / source["folder"], use_safetensors=True)
    state, report = extract(base, student, rank)
    sub = Path("students") / f"{steps}step-lora"
    write_folder(folder / sub, lambda tmp: save_file(
        {k: v.to(torch.bfloat16) for k, v in state.items()}, tmp / WEIGHTS_NAME,
        metadata={"rushes": json.dumps({"base_steps": base_steps} | report)}))
    _set_entry(folder, steps, {"folder": source["folder"], "lora": str(sub), "timesteps": list(timesteps)}
               | _noise(noise_frame_share))
    if record is not None:
        _record(folder, steps, record | report)
    return report


def _set_entry(folder: Path, steps: int, entry: dict | None) -> None:
    """Replace (None: remove) the `steps` entry of rushes.json atomically, then delete student
    files no entry uses any more."""
    info_path = folder / "rushes.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    old = info.setdefault("students", {}).get(str(steps), {})
    if entry is None:
        info["students"].pop(str(steps), None)
    else:
        info["students"][str(steps)] = entry
    tmp_info = folder / ".rushes.json.tmp"
    tmp_info.write_text(json.dumps(info, indent=2))
    os.replace(tmp_info, info_path)
    used = {e.get(k) for e in [*info["students"].values(), info.get("stream", {})] for k in ("folder", "lora")}
    for key in ("folder", "lora"):
        if old.get(key) and old[key] not in used:
            shutil.rmtree(folder / old[key], ignore_errors=True)


def alias_student(folder: Path, steps: int, source_steps: int, timesteps: list[int], record: dict | None = None) -> Path:
    """Serve `steps` steps with the `source_steps` student's network on its own timestep list
    (no new weights: rushes.json points both entries at one folder)."""
    info = json.loads((folder / "rushes.json").read_text())
    source = info.get("students", {}).get(str(source_steps))
    if source is None:
        raise ValueError(f"{folder} has no {source_steps}-step student to serve {steps} steps with")
    _set_entry(folder, steps, {k: v for k, v in source.items() if k != "timesteps"} | {"timesteps": list(timesteps)})
    if record is not None:
        _record(folder, steps, record)
    return folder


def _record(folder: Path, steps: int, record: dict) -> None:
    """Note how the `steps`-step student was made in the folder's bake.json."""
    bake_path = folder / "bake.json"
    data = json.loads(bake_path.read_text()) if bake_path.exists() else {}
    data[f"student_{steps}step"] = record
    bake_path.write_text(json.dumps(data, indent=2))
