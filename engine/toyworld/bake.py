"""`rushes bake toyworld`: rebuild the embedded model stage by stage, resumably.

Each stage trains from its newest complete checkpoint under `$RUSHES_HOME/bake/<stage>`
and, when done, writes its component into `assets/toyworld/` atomically. The VAE must exist
before the teacher, the teacher before the students.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from engine import paths
from engine.store import Store

STAGES = ("vae", "teacher", "students")
STUDENT_UPDATES = 150  # generator updates of the 4-step student
# The shipped student is distilled by the full DOLLAR recipe (VSD + consistency distillation +
# the latent reward model on `toyworld-semantic`, DistillConfig defaults) from the teacher.
# Measured on the 30500-step teacher at 150 updates (docs/RESULTS.md): DOLLAR 60.9% / 40.6%
# MiniBench semantic at 4 steps, diversity 0.853 / 0.919; VSD alone 47.3% / 29.3% and collapsing
# with more updates (diversity 0.54 / 0.44 at 300); VSD+CD 53.9% / 38.7%. `rushes distill`
# keeps every term as a knob.
STUDENT_METHOD = "vsd+cd+lrm"
# The 2- and 1-step roles run the 4-step network on their own step lists: separately distilled
# VSD students measured 2.9 / 2.0 points of MiniBench total better at 2 steps and +3.1 / -2.2 at
# 1 step, but each adds a 9.9 MB network and the shipped model is held to 30 MB (23.7 MB now).
FEWER_STEPS_FROM = 4


def _vae(resume: bool) -> Iterator[str]:
    from engine.toyworld import vae_bake

    cfg = vae_bake.VaeBakeConfig()
    work = paths.home() / "bake" / "vae"
    for event in vae_bake.train(cfg, work, resume=resume):
        yield event
    report = vae_bake.export(work, paths.TOYWORLD / "vae", cfg)
    _record("vae", report)
    yield {"stage": "vae", "done": True, **report}


def _teacher(resume: bool) -> Iterator:
    from engine.toyworld import teacher_bake

    cfg = teacher_bake.TeacherBakeConfig()
    yield from teacher_bake.train(cfg, paths.home() / "bake" / "teacher", paths.TOYWORLD, resume=resume)
    yield {"stage": "teacher", "done": True, **teacher_bake.bake_record(paths.TOYWORLD)["teacher"]}


def _students(resume: bool) -> Iterator:
    from engine.distill.config import DistillConfig
    from engine.distill.export import alias_student
    from engine.distill.run import run_distillation
    from engine.schedule import default_student_timesteps

    cfg = DistillConfig(method=STUDENT_METHOD, student_steps=4, steps=STUDENT_UPDATES)
    yield from run_distillation(cfg, "toyworld", paths.TOYWORLD, resume=resume)
    for steps in (2, 1):
        alias_student(paths.TOYWORLD, steps, FEWER_STEPS_FROM, default_student_timesteps(steps),
                      record={"method": f"the {FEWER_STEPS_FROM}-step student's network at {steps} steps"})
    yield {"stage": "students", "done": True, "method": STUDENT_METHOD}


def _record(stage: str, report: dict) -> None:
    path = paths.TOYWORLD / "bake.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(data | {stage: report}, indent=2))


def export_only(stage: str) -> Iterator[str]:
    """Write a stage's newest checkpoint into assets/toyworld without training further."""
    if stage != "teacher":
        raise ValueError(f"--export-only applies to the teacher stage, got {stage!r}")
    from engine.toyworld import teacher_bake

    teacher_bake.export_latest(paths.home() / "bake" / "teacher", paths.TOYWORLD)
    yield json.dumps({"stage": "teacher", "exported": teacher_bake.bake_record(paths.TOYWORLD)["teacher"]})


def bake(stage: str = "all", resume: bool = True) -> Iterator[str]:
    """Run one stage or all; yields one printable line per progress report."""
    stages = STAGES if stage == "all" else (stage,)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown bake stage {unknown[0]!r}; available: {', '.join(STAGES)}")
    store = Store(paths.database())
    for name in stages:
        run_id = store.create_run(f"bake-{name}", {"stage": name, "resume": resume}, status="running")
        began = time.perf_counter()
        try:
            for item in {"vae": _vae, "teacher": _teacher, "students": _students}[name](resume):
                if isinstance(item, str):
                    yield item
                    continue
                if isinstance(item, dict):
                    store.update_run(run_id, status="done", message=json.dumps(item))
                    yield json.dumps(item | {"wall_s": round(time.perf_counter() - began, 1)})
                    continue
                store.log_metrics(run_id, item.step, item.metrics)
                store.update_run(run_id, step=item.step)
                eta = f" eta {item.eta_s / 60:.1f} min" if item.eta_s is not None else ""
                metrics = " ".join(f"{k} {v:.4g}" for k, v in item.metrics.items())
                yield f"[{name}] step {item.step}/{item.total} {metrics}{eta}"
        except BaseException:
            store.update_run(run_id, status="interrupted")
            raise
