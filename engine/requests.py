"""Frozen request dataclasses: one per UI action, built by keyword, validated at the boundary."""

from __future__ import annotations

from dataclasses import dataclass

from engine import adapters, knobs

ROLES = ("auto", "student", "teacher")
SOLVERS = ("euler", "unipc")
MAX_STREAM_SECONDS = 3600.0  # one hour of video; a stream "until stopped" has no length at all


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


@dataclass(frozen=True)
class StreamRequest:
    prompt: str
    seconds: float | None = 10.0  # None: until stopped
    switches: tuple[tuple[float, str], ...] = ()  # (from this second on, this prompt)
    seed: int = 0
    model: str = "toyworld"
    pace: float | None = None  # keep at most this many seconds of video ahead of real time (a player
    # watching it: the prompt it is steered with reaches the screen that soon); None: as fast as it goes

    def validate(self) -> "StreamRequest":
        knobs.check_prompt("prompt", self.prompt)
        if self.pace is not None and (not isinstance(self.pace, (int, float)) or isinstance(self.pace, bool)
                                      or not 0 <= self.pace <= 60):
            raise ValueError(f"pace must be None or in [0, 60] seconds, got {self.pace!r}")
        if self.seconds is not None and (not isinstance(self.seconds, (int, float)) or isinstance(self.seconds, bool)
                                         or not 0 < self.seconds <= MAX_STREAM_SECONDS):
            raise ValueError(f"seconds must be in (0, {MAX_STREAM_SECONDS:g}], got {self.seconds!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2 ** 32:
            raise ValueError(f"seed must be a whole number in [0, 2**32), got {self.seed!r}")
        last = 0.0
        for at, prompt in self.switches:
            if not isinstance(at, (int, float)) or isinstance(at, bool) or at <= last:
                raise ValueError(f"switch times must be > 0 and increasing, got {at!r} after {last:g}")
            if self.seconds is not None and at >= self.seconds:
                raise ValueError(f"switch at {at:g} s is not before the stream's end ({self.seconds:g} s)")
            knobs.check_prompt(f"prompt of the switch at {at:g} s", prompt)
            last = at
        return self

    def prompt_at(self, second: float) -> str:
        """The prompt in force at this second of the stream."""
        current = self.prompt
        for at, prompt in self.switches:
            if second >= at:
                current = prompt
        return current
