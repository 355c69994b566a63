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
