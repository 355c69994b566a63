"""What the System tab shows: device, memory, data folder, the model in use."""

from __future__ import annotations

import os
import platform

import psutil
import torch

from engine import paths


def describe(engine, model: str) -> dict:
    """Facts of the machine and of the process the engine computes in (the studio's worker,
    `engine.worker`), with this process's memory beside it when that is another one."""
    info = engine.call(_describe, model)
    if info.pop("pid") != os.getpid():
        info["studio_rss_gb"] = _rss_gb()
    return info


def _rss_gb() -> float:
    return round(psutil.Process(os.getpid()).memory_info().rss / 2**30, 2)


def _describe(engine, model: str) -> dict:
    mem = psutil.virtual_memory()
    info = {
        **engine.options.describe(),
        "attention": "PyTorch SDPA (diffusers' attention processor)",
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "ram_total_gb": round(mem.total / 2**30, 1),
        "ram_available_gb": round(mem.available / 2**30, 1),
        "engine_rss_gb": _rss_gb(), "pid": os.getpid(),
        "data_folder": str(paths.home()),
        "database_mb": round(paths.database().stat().st_size / 2**20, 2) if paths.database().exists() else 0,
        "model": str(model),
    }
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        info |= {"gpu": torch.cuda.get_device_name(), "gpu_free_gb": round(free / 2**30, 1),
                 "gpu_total_gb": round(total / 2**30, 1)}
    try:
        loaded = engine.model(model)
        info |= {"model_name": loaded.info.name, "model_folder": str(loaded.folder),
                 "students": sorted(loaded.students), "teacher_steps": loaded.info.teacher_steps,
                 "clip": f"{loaded.info.frames}x{loaded.info.height}x{loaded.info.width} @ {loaded.info.fps} fps"}
    except (ValueError, FileNotFoundError) as err:
        info["model_error"] = str(err)
    return info
