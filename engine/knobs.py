"""Every user-facing generation knob, declared once: the CLI, the UI and the docs derive from it.

A knob has a name, a type, a default (None = the model's own default), a range and help text
with an example. `check(name, value)` validates a value against its knob and names the bad value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Knob:
    name: str
    type: type
    default: object  # None: the model decides (e.g. its default clip size)
    low: float | None
    high: float | None
    help: str
    multiple_of: int = 1


GENERATE = {k.name: k for k in [
    Knob("steps", int, None, 1, 1000, "denoising steps: 1, 2 or 4 for a student; e.g. 50 for the teacher"),
    Knob("seed", int, None, 0, MAX_SEED, "random seed; empty picks one, and the used seed is shown (e.g. 42)"),
    Knob("frames", int, None, 1, 257, "clip length in frames (e.g. 17); Wan VAEs need 4k+1"),
    Knob("height", int, None, 16, 2048, "height in pixels, a multiple of 16 (e.g. 64)", 16),
    Knob("width", int, None, 16, 2048, "width in pixels, a multiple of 16 (e.g. 64)", 16),
    Knob("guidance", float, None, 0.0, 30.0, "teacher classifier-free guidance scale (e.g. 5.0)"),
    Knob("lora_scale", float, 1.0, -4.0, 4.0, "strength of the applied adapter (e.g. 0.8)"),
]}


def check(name: str, value):
    """Return `value` if it fits knob `name`; raise ValueError naming the value otherwise."""
    knob = GENERATE[name]
    if value is None:
        return None
    if knob.type is int and (isinstance(value, bool) or not isinstance(value, int)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if knob.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if (knob.low is not None and value < knob.low) or (knob.high is not None and value > knob.high):
        raise ValueError(f"{name} must be in [{_bound(knob, knob.low)}, {_bound(knob, knob.high)}], got {value!r}")
    if knob.multiple_of > 1 and value % knob.multiple_of:
        raise ValueError(f"{name} must be a multiple of {knob.multiple_of}, got {value!r}")
    return value


def _bound(knob: Knob, value: float | None) -> str:
    """A knob's bound as a person reads it: whole numbers whole (4294967295, not 4.29497e+09)."""
    if value is None:
        return "-inf" if value is knob.low else "inf"
    return str(int(value)) if knob.type is int else f"{value:g}"


def check_share(name: str, value) -> float:
    """A fraction in [0, 1] (e.g. a student's `noise_frame_share`); ValueError naming the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_prompt(name: str, text, allow_empty: bool = False) -> str:
    """Prompts: a string, not blank (unless allowed), bounded, without control characters."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be text, got {type(text).__name__}")
    if not allow_empty and not text.strip():
        raise ValueError(f"{name} must not be empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"{name} is {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    bad = [c for c in text if ord(c) < 32 and c not in "\t\n" or ord(c) == 127]
    if bad:
        raise ValueError(f"{name} contains a control character {bad[0]!r}")
    return text


def check_device(device: str) -> str:
    """Return a device name of the form cpu, cuda, cuda:N or auto; ValueError naming it otherwise
    (whether a CUDA device exists is engine.runtime's check: this one needs no torch)."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", device):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
    return device


def strict_config(cls, data: dict, what: str):
    """Build a config dataclass from a dict, refusing unknown keys by name."""
    unknown = set(data) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown {what}: {sorted(unknown)}")
    return cls(**data)
