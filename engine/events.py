"""The typed events long work yields: the UI and the CLI render them, the engine produces them.

Generation, tuning, distillation and bakes are generators of these; a consumer stops the work
by setting the request's cancel flag (checked between steps) or by closing the generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Progress:
    stage: str  # e.g. "text_encode", "denoise", "decode", "vae", "teacher"
    step: int  # steps done in this stage
    total: int  # steps in this stage
    metrics: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None  # seconds left, when known


@dataclass(frozen=True)
class Preview:
    step: int  # denoising step just finished (1-based)
    total: int
    frames: np.ndarray  # uint8 [T, H, W, 3], a cheap look at the current x0 estimate


@dataclass(frozen=True)
class Result:
    value: Any  # a Clip for generation, a run summary for jobs


@dataclass(frozen=True)
class Failed:
    message: str  # one line for the user, naming the bad value or the fault
    kind: str = "error"  # "error", "cancelled", "diverged", "interrupted"


@dataclass
class StreamChunk:
    index: int
    frames: np.ndarray  # uint8 [n, H, W, 3]
    prompt: str
    start_s: float  # where the chunk starts in the stream's video time
    made_s: float  # wall seconds to denoise it (and cache it)
    decode_s: float
    since_play_s: float  # wall seconds from play to this chunk decoded
    meta: dict = field(default_factory=dict)  # the student's step list, window and fps
