"""Atomic, resumable checkpoints: a folder written under a temp name, marked complete, renamed.

A checkpoint is a folder `step-000123/` holding `state.safetensors` (tensors only: model and
optimizer state flattened) and `meta.json` (step, rng state, metrics). A kill at any point
leaves either the previous complete checkpoint or the new one, never a half-written folder at a
final name. `latest` sweeps temp folders left by dead writers only: a reader polling a live run
(a progress view, a test waiting for the first checkpoint) must not pull a folder out from under
the process still writing it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

COMPLETE = "COMPLETE"


def _flatten(prefix: str, obj, out: dict[str, torch.Tensor], meta: dict) -> None:
    """Split a nested state dict into tensors (safetensors) and plain values (json)."""
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj.detach().contiguous().cpu()
    elif isinstance(obj, dict):
        if not obj:  # e.g. an optimizer's "state" before its first step
            meta[prefix + "#empty"] = True
        for key, value in obj.items():
            _flatten(f"{prefix}/{key}", value, out, meta)
    elif isinstance(obj, (list, tuple)):
        meta[prefix + "#list"] = len(obj)
        for i, value in enumerate(obj):
            _flatten(f"{prefix}/{i}", value, out, meta)
    else:
        meta[prefix] = obj


def _unflatten(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    root: dict = {}
    items = list(tensors.items()) + [(k, v) for k, v in meta.items() if not k.endswith(("#list", "#empty"))]
    for key, value in items:
        node = root
        parts = key.split("/")[1:]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    for key in (k[: -len("#empty")] for k in meta if k.endswith("#empty")):
        node = root
        for part in key.split("/")[1:]:
            node = node.setdefault(part, {})
    lists = sorted((k[: -len("#list")] for k in meta if k.endswith("#list")), key=len, reverse=True)
    for key in lists:  # deepest first, so inner lists are rebuilt before their parents
        parts = key.split("/")[1:]
        parent = root
        for part in parts[:-1]:
            parent = parent[part]
        node = parent.get(parts[-1], {})
        parent[parts[-1]] = [node[str(i)] for i in range(meta[key + "#list"])]
    return _restore_int_keys(root)


def _restore_int_keys(node):
    """Optimizer state dicts key parameters by int; json and paths turned them into strings."""
    if isinstance(node, dict):
        return {(int(k) if k.isdigit() else k): _restore_int_keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_restore_int_keys(v) for v in node]
    return node


def save(root: Path, step: int, state: dict, info: dict | None = None, keep: int = 2) -> Path:
    """Write `state` (nested dicts of tensors and plain values) as checkpoint `step` under root."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {}
    _flatten("", state, tensors, meta)
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "meta.json").write_text(json.dumps({"step": step, "values": meta, "info": info or {}}))
    (tmp / COMPLETE).write_text("ok")
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under root, oldest first."""
    if not root.exists():
        return []
    return sorted(p for p in root.glob("step-*") if (p / COMPLETE).exists())


def refuse_restart(root: Path) -> str | None:
    """Why a run that was not asked to resume may not start in `root` (None if it may): the folder
    already holds a run's complete checkpoints, which the new run's would be mixed with and pruned
    with. Nothing is deleted; the user chooses."""
    found = complete_checkpoints(root)
    if not found:
        return None
    step = json.loads((found[-1] / "meta.json").read_text())["step"]
    return (f"{root} already holds a run with these settings ({step} updates made); pass --resume to continue "
            f"(or, if it is finished, export) it, or remove that folder to start over")


def latest(root: Path) -> tuple[int, dict, dict] | None:
    """(step, state, info) of the newest complete checkpoint, or None; sweeps dead writers' temp folders."""
    sweep_stale(root)
    found = complete_checkpoints(root)
    if not found:
        return None
    path = found[-1]
    meta = json.loads((path / "meta.json").read_text())
    state = _unflatten(load_file(str(path / "state.safetensors")), meta["values"])
    return meta["step"], state, meta["info"]


def sweep_stale(root: Path) -> None:
    """Remove temp checkpoint folders whose writer (the pid ending the name) is no longer running."""
    for tmp in root.glob(".tmp-step-*") if root.exists() else ():
        pid = tmp.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as f:
            os.fsync(f.fileno())



SNAPSHOT = "state.safetensors"


def save_snapshot(folder: Path, step: int, weights: dict[str, dict[str, torch.Tensor]], info: dict,
                  dtype: torch.dtype = torch.bfloat16) -> Path:
    """A compact snapshot of some networks' weights (no optimizer state), small enough to commit
    to git: `weights` maps a name (e.g. "model", "ema") to a state dict, stored in `dtype`, with
    the step and `info` in the file's own metadata. One file per folder, replaced atomically
    (written under a temp name, synced, renamed), so a reader sees the old snapshot or the new one."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}/{key}": value.detach().to(dtype).contiguous().cpu()
               for name, state in weights.items() for key, value in state.items()}
    tmp = folder / f".tmp-{os.getpid()}-{SNAPSHOT}"
    save_file(tensors, str(tmp), metadata={"step": str(step), "info": json.dumps(info)})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / SNAPSHOT)
    return folder / SNAPSHOT


def _snapshot_meta(folder: Path) -> tuple[int, dict] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(folder / SNAPSHOT), framework="pt") as f:
            meta = f.metadata() or {}
        return int(meta["step"]), json.loads(meta.get("info", "{}"))
    except (OSError, ValueError, KeyError, RuntimeError):  # none, or not a snapshot
        return None


def snapshot_step(folder: Path) -> int | None:
    """The step of the snapshot in `folder`, or None when there is none."""
    meta = _snapshot_meta(folder)
    return None if meta is None else meta[0]


def load_snapshot(folder: Path) -> tuple[int, dict[str, dict[str, torch.Tensor]], dict]:
    """(step, {name: float32 state dict}, info) of the snapshot in `folder`."""
    meta = _snapshot_meta(folder)
    if meta is None:
        raise FileNotFoundError(f"no readable snapshot ({SNAPSHOT} with a step) in {folder}")
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(folder / SNAPSHOT)).items():
        name, _, param = key.partition("/")
        weights.setdefault(name, {})[param] = value.float()
    return meta[0], weights, meta[1]
