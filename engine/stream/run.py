"""A causal distillation end to end (`rushes distill-stream`): store row, trainer, export.

The run's checkpoints live under `$RUSHES_HOME/runs/causal-<hash>` (the settings less the update
counts, the teacher's and the starting student's weights, the data source), so the same run
resumes and a longer one continues it. The teacher ODE pairs are kept apart, under
`runs/causal-pairs-<hash>` (the settings that make them, the teacher's weights, the data source):
runs that differ in anything else (a reward, a learning rate) share them, so an ablation does not
pay for them again. The student is exported into `out` (a copy of the
teacher's folder, or the folder itself) as its `stream` entry: whole, or with `lora_rank` as a
LoRA on the network of the student it started from.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from engine import data, loading, paths
from engine.distill.export import target_folder
from engine.distill.run import weights_fingerprint
from engine.events import Failed, Progress, Result
from engine.store import Store
from engine.stream.config import CausalConfig
from engine.stream.export import add_causal_student
from engine.stream.trainer import train


def run_dir(cfg: CausalConfig, folder: Path, info, init_student: int | None, source: str) -> Path:
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("ode_steps", "continuation_steps", "dmd_steps")}
    weights = [weights_fingerprint(folder / "transformer")]
    if init_student is not None:
        entry = info.students.get(str(init_student))
        if entry is None:
            raise ValueError(f"model {info.name!r} has no {init_student}-step student to start from")
        weights += [weights_fingerprint(folder / entry[k]) for k in ("folder", "lora") if entry.get(k)]
    key = hashlib.sha1(json.dumps([settings, weights, init_student, source], sort_keys=True).encode()).hexdigest()[:10]
    return paths.runs() / f"causal-{key}"


def pairs_path(cfg: CausalConfig, folder: Path, source: str) -> Path:
    """Where the teacher ODE pairs of a run with these settings live (shared by every run that
    would make the same ones)."""
    settings = {k: getattr(cfg, k) for k in ("pairs", "pair_guidance", "pair_steps", "seed", "chunk", "sink", "recent")}
    key = hashlib.sha1(json.dumps([settings, weights_fingerprint(folder / "transformer"), source],
                                  sort_keys=True).encode()).hexdigest()[:10]
    return paths.runs() / f"causal-pairs-{key}" / "pairs.safetensors"


def run_causal_distillation(cfg: CausalConfig, model: str, out: str | Path, source: data.DataSource,
                            init_student: int | None = None, lora_rank: int | None = None, resume: bool = True,
                            should_stop: Callable[[], bool] = lambda: False) -> Iterator[str]:
    """Train and export; yields printable lines. Raises ValueError on failure."""
    if lora_rank is not None and (init_student is None or lora_rank < 1):
        raise ValueError(f"a LoRA export (rank {lora_rank}) needs --init-student and a rank >= 1")
    began = time.perf_counter()
    loaded = loading.load(model)
    work = run_dir(cfg, loaded.folder, loaded.info, init_student, source.name)
    store = Store(paths.database())
    run_id = store.create_run("distill-stream", cfg.to_dict() | {"model": str(model), "out": str(out),
                                                                "data": source.name, "init_student": init_student},
                              status="running")
    store.update_run(run_id, pid=os.getpid(), checkpoint=str(work))
    try:
        for event in train(cfg, loaded, work, source, init_student=init_student, resume=resume,
                           should_stop=should_stop, pairs_path=pairs_path(cfg, loaded.folder, source.name)):
            if isinstance(event, Progress) and event.stage == "pairs":
                yield f"[distill-stream] teacher ODE pairs {event.step}/{event.total}"
            elif isinstance(event, Progress):
                store.update_run(run_id, step=event.step)
                store.log_metrics(run_id, event.step, event.metrics)
                shown = " ".join(f"{k} {v:.4g}" for k, v in event.metrics.items()
                                 if k in ("reg_loss", "vsd_loss", "fake_flow_loss", "reward", "student_loss"))
                yield f"[distill-stream] {event.stage} {event.step}/{event.total} {shown} eta {event.eta_s / 60:.1f} min"
            elif isinstance(event, Failed):
                store.update_run(run_id, status=event.kind, message=event.message)
                raise ValueError(event.message)
            elif isinstance(event, Result):
                trainer = event.value
                folder = target_folder(loaded.folder, Path(out))
                entry = add_causal_student(folder, trainer.ema, cfg.window, trainer.timesteps, init_student,
                                           lora_rank, record={"method": "ode+dmd", "init_student": init_student}
                                           | cfg.to_dict())
                report = {"stage": "distill-stream", "done": True, "out": str(folder), "stream": entry,
                          "updates": trainer.step, "wall_s": round(time.perf_counter() - began, 1)}
                store.update_run(run_id, status="done", message=json.dumps(report))
                yield json.dumps(report)
    except BaseException as err:
        if not isinstance(err, ValueError):
            store.update_run(run_id, status="failed", message=repr(err))
        raise
