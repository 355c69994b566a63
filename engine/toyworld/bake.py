"""`rushes bake toyworld`: rebuild the embedded model stage by stage, resumably.

Each stage trains from its newest complete checkpoint under `$RUSHES_HOME/bake/<stage>`
(the causal student's, under its run folder: engine/stream/run.py) and, when done, writes its
component into `assets/toyworld/` atomically. The VAE must exist before the teacher, the teacher
before the students, the 4-step student before the causal one (`stream`), which is stored as a
LoRA on it: remaking the 4-step student drops the causal one, and the stream stage remakes it.

The teacher stage outlives the machine it runs on: it also keeps a bf16 snapshot of its weights
in the repository's `bake-state/teacher/` (commit it; a fresh clone resumes from it) and the
bake's curve (MiniBench every `eval_every` steps) in `bake-state/teacher/curve.jsonl`. Until it
has run all its steps it exports into `$RUSHES_HOME/bake/teacher-export`, not into the shipped
assets; `--export-only` ships the newest state early. SIGTERM or Ctrl-C stops it cleanly (a
checkpoint and a snapshot at the step it was on).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from engine import paths
from engine.store import Store
from engine.toyworld.data import ToyworldData

STAGES = ("vae", "teacher", "students", "stream")
# The 4-step network is distilled by the full DOLLAR recipe (VSD + consistency distillation +
# the latent reward model on `toyworld-semantic`, DistillConfig defaults) from the teacher.
# Measured on the 30500-step teacher at 150 updates (docs/experiments/teacher-v1.md): DOLLAR 60.9% / 40.6%
# MiniBench semantic at 4 steps, diversity 0.853 / 0.919; VSD alone 47.3% / 29.3% and collapsing
# with more updates (diversity 0.54 / 0.44 at 300); VSD+CD 53.9% / 38.7%. `rushes distill`
# keeps every term as a knob. 150 generator updates.
STUDENT_SETTINGS = {"method": "vsd+cd+lrm", "steps": 150}
FEWER_STEPS_FROM = 4
# Fewer-step roles: each distilled by DOLLAR from the 4-step network (`init_student`, the
# settings below on top of STUDENT_SETTINGS) and stored as a LoRA of rank
# `STUDENT_LORA_RANK` on that network: a whole network per role (9.9 MB) would break the 30 MB
# budget. Measured (docs/experiments/one-step-student.md, "A distilled 1-step student, stored as a LoRA"): 1-step
# LoRAs of rank 8-64 score like the full distilled network on MiniBench; rank 16 is 1.0 MB. The
# shipped LoRAs against the 4-step network run at fewer steps, MiniBench total (public-eval /
# held-out): 1 step +1.4 / +3.4, 2 steps +2.4 / -1.4.
# The 1-step role leaves consistency distillation out (VSD + LRM): in two pairs of runs it scored
# 67.67 / 61.05 and 67.83 / 62.19 against DOLLAR's 64.95 / 60.86 and 65.30 / 61.20 (docs/experiments/one-step-student.md,
# "Regression on teacher ODE pairs"). It trains from frame-shared starting noise (share 0.9) with
# DMD2's GAN term (w_gan 0.05) for 1200 updates: 75.56 / 65.62 over 64 clips per split (600
# updates: 72.58 / 65.49) against 70.28 / 62.41 for the 150-update VSD+LRM student from iid noise,
# diversity 0.877 / 0.920 against 0.761 / 0.742 (docs/experiments/one-step-student.md, "Frame-shared starting noise").
# Over 256 clips per split it is 4.05 / 4.00 below the teacher. Neither 2400 updates (-1.2 / +1.5)
# nor w_gan 0.15 (-0.4 / +0.2) did better (docs/experiments/students-against-teacher.md, "The students against the teacher at
# 256 clips"). Nor did its LRM on the graded `toyworld-soft` reward: +0.36 / -0.63 against it,
# paired SE 0.62 / 0.69 (docs/experiments/students-against-teacher.md, "Continuing the 4-step student; a graded reward").
# On the v1 teacher the 1-step role was a soup (engine/distill/soup.py): the uniform weight average of 1-step
# students distilled by the recipe above and by four variants of it (the LRM on `toyworld-soft`,
# a matching-aware discriminator, w_gan 0.15, 2400 updates), each level with it within about one
# paired SE. Stored as a rank-`SOUP_LORA_RANK` LoRA on the 4-step network (rank 16 kept half the
# gain) it is 2.53 / 2.73 below the teacher on the prompts it was picked on and 2.41 / 2.75 on
# the next 128 of each split (the recipe's own student: 4.05 / 4.00 and 4.01 / 2.31), 256 clips
# per split each (docs/experiments/soups-and-pixel-reward.md, "Sampling knobs, a stronger VSD guidance, and a soup of
# students"). A role given a list of recipes is made that way: each recipe is distilled and
# exported whole under $RUSHES_HOME/bake/soup-<n>step/<i>, in list order (when resuming, a
# longer run of a recipe continues its shorter one's run folder, so it comes after it), then
# their networks are averaged and stored as one LoRA. (The v1 soup took the first recipe's
# student as shipped before, its rank-16 LoRA: that run's 1200-update checkpoint had been
# continued to 2400.)
# From the v2 teacher (session 30) the 1-step role is the recipe's own student, not the soup:
# the five ingredients cost 4.4-5.4 CPU hours against about one for one, and the soup's gain was
# measured on the v1 teacher only (about 1.5 points); the soup's recipes stay listed in
# ONE_STEP_SOUP for a bake that has the time (set FEWER_STEP_STUDENTS[1] to it).
# 600 updates, not 1200: on the v1 teacher 1200 gained 3.0 points on public-eval and 0.1 on
# held-out (75.56 / 65.62 against 72.58 / 65.49) for another CPU hour; `--resume` with
# ONE_STEP["steps"] = 1200 continues the 600-update run.
ONE_STEP = {"steps": 600, "method": "vsd+lrm", "noise_frame_share": 0.9, "w_gan": 0.05}
ONE_STEP_SOUP = [ONE_STEP | {"steps": 1200}, ONE_STEP | {"steps": 1200, "reward": "toyworld-soft"},
                 ONE_STEP | {"steps": 1200, "gan_mismatch": True}, ONE_STEP | {"steps": 1200, "w_gan": 0.15},
                 ONE_STEP | {"steps": 2400}]
FEWER_STEP_STUDENTS = {2: {"steps": 150}, 1: ONE_STEP}
STUDENT_LORA_RANK = 16
SOUP_LORA_RANK = 64  # 4.0 MB
STUDENT_ROLES = (FEWER_STEPS_FROM, 2, 1)  # in the order they are made: the fewer-step ones start from the first
# With the v1 teacher the 4-step role, last of all (so the fewer-step roles above start from the
# DOLLAR network), became a soup too: the DOLLAR network averaged with two continuations
# of it that add the differentiable pixel reward `toyworld-colour-count` (L_px, engine/reward/
# pixel.py) at w_px 4 and 16, 150 updates each from it, each exported as a rank-16 LoRA on it.
# The soup is stored as a rank-FOUR_STEP_SOUP_RANK LoRA on the DOLLAR network (1.0 MB; it keeps
# 96.5% of the change, and rank 32, exact, scored the same). Measured against the DOLLAR network
# alone on prompts 128-255 of each split, 256 clips per split, paired SE: +2.87 +- 0.76 /
# +0.53 +- 0.75 (docs/experiments/soups-and-pixel-reward.md, "The 4-step soup, shipped"). It was picked on prompts 0-63
# (+1.08 / +0.07 there), where the continuations alone were +0.23 / +0.79 (w_px 4) and
# +0.21 / +0.87 (w_px 16).
# From the v2 teacher (session 30) the 4-step role ships the DOLLAR network alone: the soup's gain
# was measured by the judge only, whose count reading `toyworld-colour-count` is made of and
# which the independent reader found flattering there (docs/experiments/students-against-teacher.md,
# "The v1 models by both readers"); the v1 soup's recipes stay in PIXEL_REWARD_SOUP (set
# FOUR_STEP_SOUP to it).
PIXEL_REWARD_SOUP = [{"w_px": 4.0, "px_reward": "toyworld-colour-count"},
                     {"w_px": 16.0, "px_reward": "toyworld-colour-count"}]
FOUR_STEP_SOUP: list[dict] = []
FOUR_STEP_PART_RANK = 16
FOUR_STEP_SOUP_RANK = 16
# The causal student that streams (engine/stream, `rushes distill-stream`): CausalConfig's defaults
# (chunks of 4 latent frames, a 1-chunk sink and 2 recent chunks, 4 steps a chunk; 200 updates of
# regression on teacher ODE pairs, then 300 of DMD on its own rollouts), started from the 4-step
# network and stored as a LoRA of rank STREAM_LORA_RANK on it. Measured in docs/RESULTS.md, "Live
# stream".
STREAM_SETTINGS: dict = {}
STREAM_FROM = FEWER_STEPS_FROM
STREAM_LORA_RANK = 16


def _vae(resume: bool) -> Iterator[str]:
    from engine.toyworld import vae_bake

    cfg = vae_bake.VaeBakeConfig()
    work = paths.home() / "bake" / "vae"
    for event in vae_bake.train(cfg, work, resume=resume):
        yield event
    report = vae_bake.export(work, paths.TOYWORLD / "vae", cfg)
    _record("vae", report)
    yield {"stage": "vae", "done": True, **report}


TEACHER_STATE = paths.BAKE_STATE / "teacher"  # committed: the bake's snapshot and its curve
CURVE = "curve.jsonl"
CURVE_PROMPTS, CURVE_SEEDS = 16, 2  # per split, at each of the teacher bake's evaluations


def teacher_scratch() -> Path:
    """Where the teacher stage exports while it trains: a pipeline folder with the shipped VAE. On a
    machine that has not baked a teacher it starts with the shipped one, so that `--resume` of a
    lengthened schedule goes on from the shipped step (the newest snapshot, when committed, wins)."""
    from engine.toyworld.teacher_bake import bake_record

    scratch = paths.home() / "bake" / "teacher-export"
    if not (scratch / "vae" / "config.json").exists():
        shutil.copytree(paths.TOYWORLD / "vae", scratch / "vae", dirs_exist_ok=True)
    shipped = bake_record(paths.TOYWORLD)
    if "teacher" not in bake_record(scratch) and "teacher" in shipped:
        shutil.copytree(paths.TOYWORLD / "transformer", scratch / "transformer", dirs_exist_ok=True)
        record = {k: shipped[k] for k in ("vae", "teacher") if k in shipped}
        (scratch / "bake.json").write_text(json.dumps(record, indent=2))
    return scratch


def curve_point(folder: Path, step: int, state: Path = TEACHER_STATE) -> dict[str, float]:
    """MiniBench of the teacher exported in `folder` (50 steps, CFG) on both splits; appended to
    the committed curve and returned as metrics named `<split>/<reading>`."""
    from engine.generate import Engine
    from engine.toyworld import minibench

    source = minibench.model_source(Engine(), str(folder), "teacher", None)
    metrics = {}
    for split, short in (("public-eval", "eval"), ("public-heldout", "heldout")):
        r = minibench.evaluate(source, split, prompts=CURVE_PROMPTS, seeds=CURVE_SEEDS)
        metrics |= {f"{short}/total": r["total"], f"{short}/semantic": r["semantic"],
                    f"{short}/opposite": r["opposite"]} | {f"{short}/{k}": v for k, v in r["semantic_parts"].items()}
    state.mkdir(parents=True, exist_ok=True)
    with open(state / CURVE, "a") as f:
        f.write(json.dumps({"step": step, "prompts": CURVE_PROMPTS, "seeds": CURVE_SEEDS} | metrics) + "\n")
    return metrics


def _teacher(resume: bool, stop: Callable[[], bool] | None = None) -> Iterator:
    from engine.toyworld import teacher_bake

    cfg = teacher_bake.TeacherBakeConfig()
    scratch = teacher_scratch()
    yield from teacher_bake.train(cfg, paths.home() / "bake" / "teacher", scratch, resume=resume,
                                  state=TEACHER_STATE, stop=stop, evaluate=curve_point)
    record = teacher_bake.bake_record(scratch).get("teacher", {})
    if record.get("step") != cfg.steps:  # stopped early: what is there stays in the snapshot
        yield {"stage": "teacher", "done": False, "step": record.get("step")}
        return
    teacher_bake.export_latest(paths.home() / "bake" / "teacher", paths.TOYWORLD, TEACHER_STATE, cfg)
    yield {"stage": "teacher", "done": True, **teacher_bake.bake_record(paths.TOYWORLD)["teacher"]}


def _students(resume: bool, roles: tuple[int, ...] = STUDENT_ROLES) -> Iterator:
    """Distil the listed student roles. The whole stage makes the fewer-step roles from the
    DOLLAR 4-step network before the 4-step soup; a fewer-step role made alone starts from the
    4-step student as shipped (the soup), so it can be remade without retraining that one."""
    from engine.distill.config import DistillConfig
    from engine.distill.export import alias_student
    from engine.distill.run import run_distillation
    from engine.schedule import default_student_timesteps

    if FEWER_STEPS_FROM in roles:
        cfg = DistillConfig(**STUDENT_SETTINGS | {"student_steps": FEWER_STEPS_FROM})
        yield from run_distillation(cfg, "toyworld", paths.TOYWORLD, ToyworldData(), resume=resume)
    for steps in (s for s in STUDENT_ROLES[1:] if s in roles):
        recipe = FEWER_STEP_STUDENTS.get(steps)
        if isinstance(recipe, list):
            yield from _soup(steps, recipe, resume, rank=SOUP_LORA_RANK)
        elif recipe is not None:
            yield from run_distillation(_fewer_step_config(steps, recipe), "toyworld", paths.TOYWORLD, ToyworldData(),
                                        resume=resume, lora_rank=STUDENT_LORA_RANK)
        else:
            alias_student(paths.TOYWORLD, steps, FEWER_STEPS_FROM, default_student_timesteps(steps),
                          record={"method": f"the {FEWER_STEPS_FROM}-step student's network at {steps} steps"})
    if FEWER_STEPS_FROM in roles and FOUR_STEP_SOUP:
        yield from _soup(FEWER_STEPS_FROM, FOUR_STEP_SOUP, resume, rank=FOUR_STEP_SOUP_RANK, with_base=True,
                         part_rank=FOUR_STEP_PART_RANK)
    yield {"stage": "students", "done": True, "roles": list(roles)}


def _stream(resume: bool) -> Iterator:
    """Distil the causal student from the shipped teacher and 4-step student into assets/toyworld."""
    from engine.stream.config import CausalConfig
    from engine.stream.run import run_causal_distillation

    yield from run_causal_distillation(CausalConfig(**STREAM_SETTINGS), "toyworld", paths.TOYWORLD, ToyworldData(),
                                       init_student=STREAM_FROM, lora_rank=STREAM_LORA_RANK, resume=resume)
    yield {"stage": "stream", "done": True}


def _fewer_step_config(steps: int, recipe: dict):
    """A fewer-step role's DistillConfig: STUDENT_SETTINGS, then `recipe`, from the 4-step network."""
    from engine.distill.config import DistillConfig

    return DistillConfig(**STUDENT_SETTINGS | recipe | {"student_steps": steps, "init_student": FEWER_STEPS_FROM})


def _soup(steps: int, recipes: list[dict], resume: bool, rank: int, with_base: bool = False,
          part_rank: int | None = None) -> Iterator:
    """Distil each recipe from the 4-step student into its own folder (with `part_rank`,
    exported as a LoRA of that rank), then store their soup (`with_base`: with the 4-step
    network as it is now as one more ingredient, first) as the `steps`-step LoRA of rank `rank`
    of assets/toyworld. A recipe is skipped when resuming if its folder's file DONE says it was
    made from the weights it would start from now (run.starting_weights)."""
    from engine import loading
    from engine.distill.run import run_distillation, starting_weights
    from engine.distill.soup import soup_students

    work = paths.home() / "bake" / f"soup-{steps}step"
    folders = [paths.TOYWORLD] if with_base else []
    info = loading.model_facts(paths.TOYWORLD)[0]
    for i, recipe in enumerate(recipes):
        folder, cfg = work / str(i), _fewer_step_config(steps, recipe)
        done = folder / "DONE"
        marker = {"recipe": recipe, "from": starting_weights(paths.TOYWORLD, info, cfg)}
        if not (resume and _holds(done, marker)):
            done.unlink(missing_ok=True)
            yield from run_distillation(cfg, "toyworld", folder, ToyworldData(), resume=resume, lora_rank=part_rank)
            done.write_text(json.dumps(marker))
        folders.append(folder)
    records = [STUDENT_SETTINGS | r | ({"lora_rank": part_rank} if part_rank else {}) for r in recipes]
    if with_base:  # the network's own record (how it was distilled) heads the list
        records.insert(0, json.loads((paths.TOYWORLD / "bake.json").read_text()).get(f"student_{steps}step", {}))
    report = soup_students(folders, steps, paths.TOYWORLD, lora_rank=rank, base_steps=FEWER_STEPS_FROM,
                           base=paths.TOYWORLD, record={"soup_of": records})
    yield json.dumps({"stage": "students", "soup": steps} | report)


def _holds(path, marker: dict) -> bool:
    """Whether the JSON file at `path` holds `marker` (a missing or torn file does not)."""
    try:
        return json.loads(path.read_text()) == marker
    except (OSError, ValueError):
        return False


def _record(stage: str, report: dict) -> None:
    path = paths.TOYWORLD / "bake.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(data | {stage: report}, indent=2))


def export_only(stage: str) -> Iterator[str]:
    """Write a stage's newest checkpoint into assets/toyworld without training further."""
    if stage != "teacher":
        raise ValueError(f"--export-only applies to the teacher stage, got {stage!r}")
    from engine.toyworld import teacher_bake

    teacher_bake.export_latest(paths.home() / "bake" / "teacher", paths.TOYWORLD, TEACHER_STATE)
    yield json.dumps({"stage": "teacher", "exported": teacher_bake.bake_record(paths.TOYWORLD)["teacher"]})


def bake(stage: str = "all", resume: bool = True, students: tuple[int, ...] | None = None,
         stop: Callable[[], bool] | None = None) -> Iterator[str]:
    """Run one stage or all; yields one printable line per progress report. `students` limits
    the students stage to those roles (step counts); `stop()`, asked before every teacher step,
    ends the teacher stage cleanly (and the bake after it)."""
    stages = STAGES if stage == "all" else (stage,)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown bake stage {unknown[0]!r}; available: {', '.join(STAGES)}")
    if students is not None and stage != "students":
        raise ValueError(f"choosing student roles needs --stage students, got --stage {stage}")
    roles = STUDENT_ROLES if students is None else tuple(students)
    bad = [n for n in roles if n not in STUDENT_ROLES]
    if bad or not roles:
        raise ValueError(f"unknown student role {bad[0] if bad else '(none)'}; "
                         f"available: {', '.join(map(str, STUDENT_ROLES))}")
    chosen = {"vae": _vae, "teacher": lambda resume: _teacher(resume, stop),
              "students": lambda resume: _students(resume, roles), "stream": _stream}
    store = Store(paths.database())
    for name in stages:
        run_id = store.create_run(f"bake-{name}", {"stage": name, "resume": resume}, status="running")
        began, finished = time.perf_counter(), True
        try:
            for item in chosen[name](resume):
                if isinstance(item, str):
                    yield item
                    continue
                if isinstance(item, dict):
                    finished = item.get("done", True)
                    store.update_run(run_id, status="done" if finished else "stopped", message=json.dumps(item))
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
        if not finished:  # stopped: the later stages need this one whole
            return
