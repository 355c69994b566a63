"""Frozen request dataclasses: one per UI action, built by keyword, validated at the boundary."""

from __future__ import annotations

from dataclasses import dataclass

from engine import adapters, knobs

ROLES = ("auto", "student", "teacher")
SOLVERS = ("euler", "unipc")


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    negative: str = ""  # teacher only: the unconditional branch of CFG
    model: str = "toyworld"  # a built-in name or a pipeline folder
    role: str = "auto"  # "student" (few steps, no CFG), "teacher" (many steps, CFG), "auto": student if any
    steps: int | None = None  # None: 4 for a student, the model's teacher steps otherwise
    seed: int | None = None  # None: a random seed, reported with the clip
    frames: int | None = None  # None: the model's default
    height: int | None = None
    width: int | None = None
    guidance: float | None = None  # None: the model's default (teacher only)
    solver: str | None = None  # teacher ODE solver, "euler" or "unipc"; None: the checkpoint's own scheduler's
    lora: str | None = None  # adapter folder or file (diffusers LoRA, safetensors)
    lora_scale: float = 1.0
    preview: bool = False  # yield Preview events with a cheap look at each step

    def validate(self) -> "GenerateRequest":
        """Raise ValueError naming the first bad value; return self when all are good."""
        knobs.check_prompt("prompt", self.prompt)
        knobs.check_prompt("negative prompt", self.negative, allow_empty=True)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must name a model or a folder, got {self.model!r}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.solver is not None and self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        for name in ("steps", "seed", "frames", "height", "width", "guidance", "lora_scale"):
            knobs.check(name, getattr(self, name))
        if self.lora is not None:
            adapters.check_file(self.lora)
        return self
