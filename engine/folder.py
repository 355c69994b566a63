"""Pipeline folders: diffusers format on disk, plus `rushes.json` for what diffusers lacks.

A folder holds `model_index.json` (class WanPipeline), `transformer/`, `vae/`, `scheduler/`
and optionally `text_encoder/` + `tokenizer/`; without them the engine injects MiniLM. It loads
with plain `diffusers.DiffusionPipeline.from_pretrained(folder, text_encoder=..., tokenizer=...)`.
`rushes.json` records the studio's facts: distilled students (steps -> subfolder and timestep
list), shift, default guidance and clip size, fps. Only safetensors are ever read.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.knobs import strict_config

WEIGHT_SUFFIXES_REFUSED = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")


@dataclass(frozen=True)
class ModelInfo:
    name: str = "model"  # shown in the UI and logged with every clip
    shift: float = 3.0  # flow-matching shift k used by sampling and training
    guidance: float = 5.0  # teacher's default CFG scale
    teacher_steps: int = 50  # teacher's default number of steps
    students: dict[str, dict] = field(default_factory=dict)  # "4" -> {"folder", "timesteps"}
    frames: int = 17  # default clip length
    height: int = 64  # default height (pixels)
    width: int = 64  # default width (pixels)
    max_frames: int = 81  # longest clip the studio will ask for
    max_side: int = 1280  # largest height or width
    fps: int = 8  # playback rate of exported clips
    text_max_length: int = 32  # tokens fed to cross-attention
    kind: str = "teacher"  # "teacher": full model; "student": the folder's transformer is distilled
    student_timesteps: list[int] = field(default_factory=list)  # for kind == "student"
    solver: str = "euler"  # the teacher's ODE solver by default: the checkpoint's scheduler's ("unipc" for Wan2.1)
    world: str = ""  # the data plug-in whose prompts and clips it was trained on (engine/data.py), e.g. "toyworld"
    # the words it knows, by kind ({"colours": [...], ..., "examples": [...]}), shown in the Create tab
    vocabulary: dict[str, list[str]] = field(default_factory=dict)
    # a causal student that streams (engine/stream): {"folder", "lora"?, "timesteps", "chunk", "sink", "recent"}
    stream: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        return strict_config(cls, data, "keys in rushes.json")


def read_info(folder: Path) -> ModelInfo:
    path = folder / "rushes.json"
    if path.exists():
        return ModelInfo.from_dict(json.loads(path.read_text()))
    info = ModelInfo(name=folder.name)
    text_index = json.loads((folder / "model_index.json").read_text()).get("text_encoder", [None])
    if text_index and text_index[0]:  # a real checkpoint with its own encoder (e.g. UMT5)
        info = ModelInfo(name=folder.name, text_max_length=512, frames=81, height=480, width=832,
                         fps=16, guidance=5.0, shift=_scheduler_shift(folder), solver=_scheduler_solver(folder))
    return info


SOLVER_OF = {"UniPCMultistepScheduler": "unipc", "FlowMatchEulerDiscreteScheduler": "euler"}


def _scheduler_solver(folder: Path) -> str:
    """The engine's solver for the scheduler class the checkpoint ships (Wan2.1: UniPC); Euler for others."""
    entry = json.loads((folder / "model_index.json").read_text()).get("scheduler") or [None, None]
    return SOLVER_OF.get(entry[1], "euler")


def _scheduler_shift(folder: Path) -> float:
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    if not cfg_path.exists():
        return 3.0
    cfg = json.loads(cfg_path.read_text())
    return float(cfg.get("flow_shift") or cfg.get("shift") or 3.0)


def check_folder(folder: Path) -> None:
    """Refuse folders that are not pipelines, or that carry pickle-format weights."""
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"not a diffusers pipeline folder (no model_index.json): {folder}")
    pickles = [p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES_REFUSED]
    if pickles:
        raise ValueError(f"refusing pickle-format weights (only safetensors are loaded): {pickles[0]}")


def write_pipeline(folder: Path, transformer, vae, scheduler, info: ModelInfo,
                   students: dict[int, tuple[object, list[int]]] | None = None) -> Path:
    """Write a pipeline folder atomically (temp folder, then rename); returns the folder.

    `students` maps a step count to (transformer, timestep list); each is saved under
    `students/<n>step/` and listed in rushes.json.
    """
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    transformer.save_pretrained(tmp / "transformer", safe_serialization=True)
    if type(vae).__name__ == "AutoencoderKL":  # WanPipeline reads these two from the VAE config
        spatial = 2 ** (len(vae.config.block_out_channels) - 1)
        vae.register_to_config(scale_factor_temporal=1, scale_factor_spatial=spatial)
    vae.save_pretrained(tmp / "vae", safe_serialization=True)
    scheduler.save_pretrained(tmp / "scheduler")
    listed = dict(info.students)
    for steps, (student, timesteps) in (students or {}).items():
        sub = f"students/{steps}step"
        student.save_pretrained(tmp / sub, safe_serialization=True)
        listed[str(steps)] = {"folder": sub, "timesteps": list(timesteps)}
    import diffusers  # loaded already (the components are diffusers models); engine.loading says why

    index = {
        "_class_name": "WanPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": [None, None],
        "tokenizer": [None, None],
        "transformer": ["diffusers", type(transformer).__name__],
        "transformer_2": [None, None],
        "vae": ["diffusers", type(vae).__name__],
        "boundary_ratio": None,
        "expand_timesteps": False,
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    data = asdict(info) | {"students": listed}
    (tmp / "rushes.json").write_text(json.dumps(data, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder
