"""A soup of students: the weight average of students distilled from one starting network.

Fine-tuned networks that start from the same weights stay in one basin, and their uniform weight
average often scores above each of them (a "uniform soup", Wortsman et al. 2022, "Model soups"):
theta_soup = sum_i w_i theta_i / sum_i w_i. On toyworld the 1-step students distilled from the
4-step network with different knobs (GAN weight, reward, length, a matching-aware discriminator)
each score level with one another, and their soup scores above them (docs/experiments/soups-and-pixel-reward.md, "Sampling
knobs, a stronger VSD guidance, and a soup of students"). The average runs on the fused
networks, so students stored as LoRAs on one base network average as their whole weights; the
soup is written as a whole network or, with `lora_rank`, as a LoRA on the base network again.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from engine.distill.export import add_student, add_student_lora


def check_weights(weights: Sequence[float] | None, students: int) -> list[float]:
    """The soup's weights (1 each when None), checked: one per student, >= 0, not all 0."""
    if students < 2:
        raise ValueError(f"a soup needs at least 2 students, got {students}")
    weights = [1.0] * students if weights is None else [float(w) for w in weights]
    if len(weights) != students:
        raise ValueError(f"{len(weights)} soup weights for {students} students")
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"soup weights must be >= 0 and not all 0, got {weights}")
    return weights


def average_weights(states: Sequence[Mapping[str, torch.Tensor]],
                    weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """sum_i w_i theta_i / sum_i w_i for every tensor, in float32 (uniform when `weights` is None).
    The states must hold the same names with the same shapes; weights must be >= 0, not all 0."""
    weights = check_weights(weights, len(states))
    first = states[0]
    for i, state in enumerate(states[1:], start=1):
        if state.keys() != first.keys():
            odd = sorted(set(state) ^ set(first))[:3]
            raise ValueError(f"student {i} has other weights than student 0 (e.g. {odd}): not the same network")
        shapes = [k for k in first if state[k].shape != first[k].shape]
        if shapes:
            raise ValueError(f"student {i}'s {shapes[0]} is {tuple(state[shapes[0]].shape)}, "
                             f"student 0's {tuple(first[shapes[0]].shape)}: not the same network")
    total = sum(weights)
    return {k: sum(w * s[k].float() for w, s in zip(weights, states)) / total for k in first}


def soup_students(sources: Sequence[str | Path], steps: int, out: str | Path,
                  weights: Sequence[float] | None = None, lora_rank: int | None = None, base_steps: int = 4,
                  base: str | Path | None = None, record: dict | None = None) -> dict:
    """Average the `steps`-step students of `sources` (model names or folders) and write the soup
    as the `steps`-step student of `out`, a copy of `base` (a folder; default the first source's)
    or `base` itself when they are one folder: a whole network, or with `lora_rank` a LoRA of that
    rank on base's `base_steps`-step network (the one the students started from). `record`
    (default: the sources) goes into out's bake.json with the weights. The students must share
    their timestep list and starting noise (else the soup would be sampled unlike each of them).
    Returns what was written (and the LoRA extraction report)."""
    from engine import loading

    weights = check_weights(weights, len(sources))
    if lora_rank is not None and lora_rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {lora_rank}")
    states, first = [], None
    for source in sources:
        loaded = loading.load(source)
        network, timesteps = loaded.student(steps)
        facts = (timesteps, loaded.noise_frame_share(steps))
        if first is None:
            first, template = facts, network.transformer
            folder = loaded.folder if base is None else Path(base)
        elif facts != first:
            raise ValueError(f"{source}'s {steps}-step student samples at timesteps {facts[0]} with noise frame share "
                             f"{facts[1]}, {sources[0]}'s at {first[0]} with {first[1]}: they do not make one soup")
        states.append(network.transformer.state_dict())
    soup = copy.deepcopy(template).float()
    soup.load_state_dict(average_weights(states, weights))
    timesteps, share = first
    record = (record or {"soup_of": [str(s) for s in sources]}) | {"weights": weights}
    if lora_rank is None:
        add_student(folder, soup, steps, timesteps, Path(out), record=record, noise_frame_share=share)
        return {"out": str(out), "steps": steps, "students": len(states)}
    report = add_student_lora(folder, soup, steps, timesteps, base_steps, lora_rank, Path(out),
                              record=record | {"from": f"{base_steps}-step student"}, noise_frame_share=share)
    return {"out": str(out), "steps": steps, "students": len(states), "rank": lora_rank} | report
