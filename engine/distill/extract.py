"""A fine-tuned transformer as a LoRA on its base: truncated SVD of each Linear's weight change.

For every Linear, ΔW = W_tuned − W_base ≈ B·A with B = U_r·diag(√S_r) and A = diag(√S_r)·V_rᵀ:
by Eckart–Young this is the best rank-r approximation of ΔW in Frobenius norm, and splitting
√S between the two factors keeps both in the same range for bf16 storage. The state dict uses
the diffusers LoRA layout (`transformer.<module>.lora_A.weight` / `lora_B.weight`, alpha = rank,
so scale 1 reproduces B·A), which `load_lora_adapter` reads and `fuse_lora` folds back in.

Only Linear weights are carried: a LoRA has no place for changes to biases, norms, the patch
embedding or modulation tables, so those are dropped, and `extract` reports how much was lost.
"""

from __future__ import annotations

import torch
from torch import nn

PREFIX = "transformer."


def extract(base: nn.Module, tuned: nn.Module, rank: int) -> tuple[dict[str, torch.Tensor], dict]:
    """(LoRA state dict, report) turning `base` into (approximately) `tuned`.

    The report gives the share of the Linear weight change's energy (squared Frobenius norm)
    the rank-`rank` factors keep, and the norm of the change left out (the residual of every
    Linear plus every parameter that is not a Linear weight), relative to the whole change.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    base_params = dict(base.named_parameters())
    tuned_params = dict(tuned.named_parameters())
    if base_params.keys() != tuned_params.keys():
        missing = sorted(base_params.keys() ^ tuned_params.keys())[:3]
        raise ValueError(f"the tuned model does not have the base model's parameters (e.g. {missing})")
    state: dict[str, torch.Tensor] = {}
    carried: set[str] = set()
    kept = linear_total = other_total = 0.0
    for name, module in tuned.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        delta = module.weight.detach().float() - base_params[f"{name}.weight"].detach().float()
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(rank, s.numel())
        root = s[:r].sqrt()
        state[f"{PREFIX}{name}.lora_A.weight"] = (root[:, None] * vh[:r]).contiguous()
        state[f"{PREFIX}{name}.lora_B.weight"] = (u[:, :r] * root).contiguous()
        kept += float((s[:r] ** 2).sum())
        linear_total += float((s ** 2).sum())
        carried.add(f"{name}.weight")
    for key, value in tuned_params.items():
        if key not in carried:
            other_total += float((value.detach().float() - base_params[key].detach().float()).pow(2).sum())
    total = linear_total + other_total
    report = {
        "rank": rank,
        "linear_energy_kept": kept / linear_total if linear_total else 1.0,
        "change_left_out": ((total - kept) / total) ** 0.5 if total else 0.0,
        "lora_parameters": sum(t.numel() for t in state.values()),
    }
    return state, report

