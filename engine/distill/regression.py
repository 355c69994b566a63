"""Regression on teacher ODE pairs (DMD: Yin et al. 2024, "One-step Diffusion with Distribution
Matching Distillation", §3.3, the regression loss).

A set of pairs (noise z, caption c, teacher sample y) is made once: y is the teacher's many-step
guided ODE run from z under c. The generator's output from the same z is pulled toward y:

    L_reg = E_(z, c, y) d(G_theta(z, c), y),   d = mean squared error over the latent

VSD matches the student's distribution to the teacher's, so it leaves free which noise goes to
which sample; the pairs tie the student's noise -> sample map to the teacher's deterministic one
(DMD adds it for mode coverage; here it is a knob, `w_reg`, off by default). The pairs are made
once per run and saved beside its checkpoints (`pairs.safetensors`, written atomically), so a
resumed run uses the same ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Generator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine import schedule
from engine.events import Progress
from engine.model import FlowModel
from engine.sampling import run_to_end, teacher_sample

PAIRS_FILE = "pairs.safetensors"


def regression_loss(x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """L_reg = mean (x - sg(target))^2 over every element; x carries the generator's gradient."""
    loss = (x.float() - target.detach().float()).pow(2).mean()
    return loss, {"reg_loss": loss.item()}


def make_pairs(teacher: FlowModel, text, captions: list[str], latent_shape: tuple[int, ...], count: int, steps: int,
               guidance: float, shift: float, seed: int, batch: int = 8,
               amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               ) -> Generator[Progress, None, dict]:
    """Yields Progress (stage "pairs", `elapsed_s` in its metrics) after each batch; returns
    {"noise", "target" [N, *latent_shape], "states" [N, L, D] float16, "captions"} from the
    teacher's `steps`-step Euler ODE with CFG `guidance` from `count` noises drawn from `seed`, one
    per caption (the same arguments give the same pairs)."""
    if len(captions) != count:
        raise ValueError(f"make_pairs needs one caption per pair: {len(captions)} captions for {count} pairs")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((count, *latent_shape), generator=gen)
    sigmas = schedule.teacher_sigmas(steps, shift)
    states = text.encode(captions).half().cpu()
    uncond = text.encode([""])
    targets, began = [], time.perf_counter()
    for lo in range(0, count, batch):
        chunk = noise[lo:lo + batch]
        cond = states[lo:lo + batch].float()
        with torch.no_grad(), amp():
            x = run_to_end(teacher_sample(teacher, chunk, sigmas, cond, uncond.expand(len(chunk), -1, -1),
                                          guidance))
        targets.append(x.float().cpu())
        done, elapsed = lo + len(chunk), time.perf_counter() - began
        yield Progress(stage="pairs", step=done, total=count, metrics={"elapsed_s": elapsed},
                       eta_s=(count - done) * elapsed / done)
    return {"noise": noise, "target": torch.cat(targets), "states": states, "captions": captions}


def save_pairs(path: Path, pairs: dict, meta: dict) -> None:
    """Write the pairs and the settings that made them; a kill leaves no partial file."""
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: pairs[k].contiguous() for k in ("noise", "target", "states")}
    save_file(tensors, str(tmp), metadata={"settings": json.dumps(meta, sort_keys=True),
                                           "captions": json.dumps(pairs["captions"])})
    os.replace(tmp, path)


def load_pairs(path: Path, meta: dict) -> dict | None:
    """The pairs at `path` if they were made with exactly `meta`; None if absent or made otherwise."""
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        stored = f.metadata() or {}
    if stored.get("settings") != json.dumps(meta, sort_keys=True):
        return None
    pairs = dict(load_file(str(path)))
    pairs["captions"] = json.loads(stored["captions"])
    return pairs


def load_or_make(path: Path, settings: dict, teacher: FlowModel, text, captions: list[str], seed: int,
                 amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 ) -> Generator[Progress, None, dict]:
    """The pairs saved at `path` if they were made with `settings` (count, steps, guidance, shift,
    latent_shape), else made now (yielding make_pairs' Progress) and saved there."""
    pairs = load_pairs(path, settings)
    if pairs is None:
        pairs = yield from make_pairs(teacher, text, captions, tuple(settings["latent_shape"]), settings["count"],
                                      settings["steps"], settings["guidance"], settings["shift"], seed, amp=amp)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_pairs(path, pairs, settings)
    return pairs
