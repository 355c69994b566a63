"""A distillation run end to end: store row, trainer, metrics, export of the student.

Shared by `rushes distill` and the bake's students stage. The run's checkpoints live under
`$RUSHES_HOME/runs/distill-<hash of settings and teacher>` so the same settings on the same
teacher weights resume the same run, and a re-baked teacher starts a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from engine import data, loading, paths
from engine.distill.config import DistillConfig
from engine.distill.export import add_student, add_student_lora
from engine.distill.trainer import check_data, train
from engine.events import Failed, Progress, Result
from engine.store import Store


def run_dir(cfg: DistillConfig, model: str, teacher: str = "", source: str = "") -> Path:
    """Same settings, teacher and data, same folder; `steps` is left out so a finished run can be
    extended. `teacher` is the teacher weights' fingerprint (`weights_fingerprint`), `source` the
    data source's name (engine/data.py)."""
    settings = {k: v for k, v in cfg.run_settings().items() if k != "steps"}
    key = hashlib.sha1(json.dumps([settings, str(model), teacher, source], sort_keys=True).encode()).hexdigest()[:10]
    return paths.runs() / f"distill-{key}"


def weights_fingerprint(folder: Path, sample: int = 1 << 20) -> str:
    """A cheap identity for the weights in `folder`: config, file sizes, and the first and last
    MiB of each safetensors file (whole-file hashing would take seconds on a real checkpoint)."""
    digest = hashlib.sha1()
    for path in sorted(Path(folder).glob("*")):
        if path.name == "config.json" or path.suffix == ".safetensors":
            size = path.stat().st_size
            digest.update(f"{path.name}:{size}".encode())
            with path.open("rb") as f:
                digest.update(f.read(sample))
                f.seek(max(0, size - sample))
                digest.update(f.read(sample))
    return digest.hexdigest()[:16]


def starting_weights(folder: Path, info: loading.ModelInfo, cfg: DistillConfig) -> str:
    """The fingerprint a run folder is keyed by: the teacher's weights in pipeline `folder`, and
    with `init_student` also the starting student's (a re-distilled 4-step student must not
    resume an old 1-step run). Reads file heads only, so it needs no loaded model."""
    teacher = weights_fingerprint(folder / "transformer")
    if cfg.init_student is None:
        return teacher
    entry = info.students.get(str(cfg.init_student))
    if entry is None:
        raise ValueError(f"model {info.name!r} has no {cfg.init_student}-step student to start from")
    start = weights_fingerprint(folder / entry["folder"])
    if entry.get("lora"):
        start += weights_fingerprint(folder / entry["lora"])
    return f"{teacher}+{start}"


def run_distillation(cfg: DistillConfig, model: str, out: str | Path, source: data.DataSource, resume: bool = True,
                     lora_rank: int | None = None) -> Iterator[str]:
    """Train on `source`'s prompts and clips, log and export; yields printable lines. Raises
    ValueError on failure.

    With `lora_rank`, the student (which must start from the `cfg.init_student`-step student)
    is exported as a LoRA of that rank on the network it started from, not as a whole network.
    """
    if lora_rank is not None and (cfg.init_student is None or lora_rank < 1):
        raise ValueError(f"a LoRA export (rank {lora_rank}) needs init_student set and a rank >= 1")
    check_data(cfg, source)  # before the model loads
    began = time.perf_counter()
    loaded = loading.load(model)
    store = Store(paths.database())
    work = run_dir(cfg, model, starting_weights(loaded.folder, loaded.info, cfg), source.name)
    run_id = store.create_run("distill", cfg.to_dict() | {"model": str(model), "out": str(out), "data": source.name},
                              status="running")
    store.update_run(run_id, pid=os.getpid(), checkpoint=str(work))
    try:
        for event in train(cfg, loaded, work, source, resume=resume,
                           on_metrics=lambda step, logs: store.log_metrics(run_id, step, logs)):
            if isinstance(event, Progress) and event.stage == "pairs":
                took = (f" made in {event.metrics['elapsed_s']:.0f} s" if event.step == event.total
                        else f" eta {event.eta_s / 60:.1f} min")
                yield f"[distill] teacher ODE pairs {event.step}/{event.total}{took}"
            elif isinstance(event, Progress):
                store.update_run(run_id, step=event.step)
                shown = " ".join(f"{k} {v:.4g}" for k, v in event.metrics.items()
                                 if k in ("generator_loss", "vsd_loss", "cd_loss", "lrm_reward", "reward_student",
                                          "reg_loss"))
                yield f"[distill] step {event.step}/{event.total} {shown} eta {event.eta_s / 60:.1f} min"
            elif isinstance(event, Failed):
                store.update_run(run_id, status=event.kind, message=event.message)
                raise ValueError(event.message)
            elif isinstance(event, Result):
                trainer = event.value
                if trainer.acc.is_main_process:
                    student = trainer.acc.unwrap_model(trainer.student_ddp)
                    defaults = DistillConfig().to_dict()  # the record names every knob set off its default
                    record = {"method": cfg.method, "steps": cfg.steps, "reward": cfg.reward} | {
                        k: v for k, v in cfg.to_dict().items() if v != defaults[k]}
                    extra = {}
                    if lora_rank is None:
                        add_student(loaded.folder, student, cfg.student_steps, trainer.timesteps, Path(out),
                                    record=record, noise_frame_share=cfg.noise_frame_share)
                    else:
                        extra = add_student_lora(loaded.folder, student, cfg.student_steps, trainer.timesteps,
                                                 cfg.init_student, lora_rank, Path(out),
                                                 record=record | {"from": f"{cfg.init_student}-step student"},
                                                 noise_frame_share=cfg.noise_frame_share)
                store.update_run(run_id, status="done", step=trainer.step)
                yield json.dumps({"out": str(out), "student_steps": cfg.student_steps, "method": cfg.method,
                                  "timesteps": trainer.timesteps, "run_id": run_id,
                                  "wall_s": round(time.perf_counter() - began, 1)} | extra)
    except (KeyboardInterrupt, SystemExit):
        store.update_run(run_id, status="interrupted")
        raise
