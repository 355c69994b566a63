"""The model registry: `$RUSHES_HOME/models.toml` names the models the studio can pick.

Each entry gives a folder or a hub id (`source`), the role its transformer plays, the
student's step list, shift, guidance and dtype, and optionally a step-distillation LoRA that
turns a teacher into a student. Hub ids download as usual when the machine is online; offline,
a clear error names what is missing. Presets cover Wan2.1-T2V-1.3B (teacher, 50 steps, CFG),
FastWan2.1-T2V-1.3B (3-step student [1000, 757, 522], shift 8, no CFG) and the teacher plus a
4-step distillation LoRA (fill in the LoRA you have).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine import paths

PRESETS = '''# rushes model registry: one [models.NAME] table per model.
# source: a pipeline folder or a Hugging Face hub id; role: "teacher" or "student".

[models."wan2.1-t2v-1.3b"]
source = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
role = "teacher"
teacher_steps = 50
guidance = 5.0
shift = 3.0
dtype = "bfloat16"

[models."fastwan2.1-t2v-1.3b"]
source = "FastVideo/FastWan2.1-T2V-1.3B-Diffusers"
role = "student"
timesteps = [1000, 757, 522]
shift = 8.0
guidance = 1.0
dtype = "bfloat16"

# The teacher plus a step-distillation LoRA (4 steps, no CFG): set lora to the file you have.
[models."wan2.1-t2v-1.3b-lora4"]
source = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
role = "student"
timesteps = [1000, 750, 500, 250]
lora = ""
shift = 5.0
guidance = 1.0
dtype = "bfloat16"
'''


@dataclass(frozen=True)
class Entry:
    name: str
    source: str  # folder or hub id
    role: str = "teacher"  # what the source's own transformer is
    timesteps: list[int] = field(default_factory=list)  # student step list (role = student)
    teacher_steps: int = 50
    shift: float | None = None  # None: the scheduler config's
    guidance: float = 5.0
    dtype: str = "float32"
    # step-distillation LoRA applied to the transformer (role = student); None: none. An empty string is a preset
    # waiting for its file (the teacher + LoRA preset): refused when the model is picked (`check_ready`)
    lora: str | None = None

    def __post_init__(self):
        if self.role not in ("teacher", "student"):
            raise ValueError(f"model {self.name!r}: role must be teacher or student, got {self.role!r}")
        if self.role == "student" and not self.timesteps:
            raise ValueError(f"model {self.name!r}: a student needs its timesteps list")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"model {self.name!r}: dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


def check_ready(entry: Entry) -> None:
    """ValueError naming the field to fill when an entry cannot run as it stands: a student preset
    whose step-distillation LoRA is still empty would run the undistilled teacher at a student's
    few steps and call it a student."""
    if entry.lora is not None and not entry.lora.strip():
        raise ValueError(f"model {entry.name!r} is a teacher plus a step-distillation LoRA, and its lora is empty: "
                         f"set lora = \"/path/to/the_lora.safetensors\" under [models.\"{entry.name}\"] in "
                         f"{registry_path()}")


def registry_path() -> Path:
    return paths.home() / "models.toml"


def load_registry() -> dict[str, Entry]:
    """The registry, written with the presets on first use; bad entries name themselves."""
    path = registry_path()
    if not path.exists():
        path.write_text(PRESETS)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    entries = {}
    for name, fields in data.get("models", {}).items():
        unknown = set(fields) - set(Entry.__dataclass_fields__) - {"name"}
        if unknown:
            raise ValueError(f"model {name!r} in {path}: unknown keys {sorted(unknown)}")
        entries[name] = Entry(name=name, **fields)
    return entries


def materialise(entry: Entry) -> Path:
    """The local folder for an entry: the folder itself, or the hub snapshot (downloaded if online)."""
    folder = Path(entry.source).expanduser()
    if folder.is_dir():
        return folder
    if "/" not in entry.source or entry.source.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"model {entry.name!r}: folder {entry.source} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(entry.source, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    try:
        return Path(snapshot_download(entry.source, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as err:  # offline, unknown repo, no permission: one clear line
        raise FileNotFoundError(
            f"model {entry.name!r}: {entry.source} is not in the local cache and could not be downloaded "
            f"({type(err).__name__}); download it on a connected machine or point source at a folder") from None
