"""toyworld's differentiable pixel rewards `(pixels [B, 3, T, H, W] in [-1, 1], captions) -> [B]`:
the judge's colour and count readings made smooth, so a gradient through the VAE decoder can climb
them (engine/reward/pixel.py, L_px). Registered as "toyworld-colour" and "toyworld-colour-count" by
engine/toyworld/plugin.py.

`toyworld_colour` is the judge's graded colour reading (`judge.soft_score`'s colour: the share
of frames in which each asked colour covers MIN_AREA) made smooth: a pixel counts toward colour
c by its soft nearest-palette weight times a soft "within MAX_COLOUR_DISTANCE" gate.
`toyworld_colour_count` adds the judge's count reading, made smooth the same way.
"""

from __future__ import annotations

import torch

from engine.toyworld import judge, world
from engine.toyworld.parse import parse_caption

SOFT_NEAREST = 20.0  # sRGB units: temperature of the soft nearest-palette assignment
SOFT_GATE = 5.0  # sRGB units: width of the soft MAX_COLOUR_DISTANCE gate
SEEN_AREA = 0.25  # width of the soft "covers MIN_AREA" test, as a share of MIN_AREA
SEEN_SHARE = 0.1  # width of the soft "in at least half the frames" test


def coverage(pixels: torch.Tensor) -> torch.Tensor:
    """Soft pixel count [B, J, T] of each palette entry j (judge.PALETTE) in pixels [B, 3, T, H, W]
    in [-1, 1]: sum over pixels of softmax_j(-d_j^2 / 2 s^2) x sigmoid((MAX_COLOUR_DISTANCE - d_j)
    / g), d_j the sRGB distance to entry j. At s, g -> 0 it is the judge's hard count
    (`judge.assign`)."""
    palette = torch.as_tensor(judge.PALETTE, dtype=pixels.dtype, device=pixels.device)  # [J, 3]
    rgb = (pixels.clamp(-1, 1) + 1) * 127.5  # [B, 3, T, H, W] in sRGB units
    d2 = ((rgb[:, None] - palette[None, :, :, None, None, None]) ** 2).sum(2)  # [B, J, T, H, W]
    nearest = torch.softmax(-d2 / (2 * SOFT_NEAREST ** 2), dim=1)
    gate = torch.sigmoid((judge.MAX_COLOUR_DISTANCE - (d2 + 1e-6).sqrt()) / SOFT_GATE)
    return (nearest * gate).sum((-2, -1))


def _object_coverage(pixels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(coverage [B, K, T] of the K object colours (world.COLOURS), MIN_AREA in pixels)."""
    return coverage(pixels)[:, :len(world.COLOURS)], judge.MIN_AREA_FRACTION * pixels.shape[-2] * pixels.shape[-1]


def _presence(cov: torch.Tensor, min_area: float) -> torch.Tensor:
    """[B, K]: mean over frames of min(coverage / MIN_AREA, 1), the share of frames each colour is
    there in (judge.soft_score's colour reading)."""
    return (cov / min_area).clamp(max=1).mean(-1)


def _seen(cov: torch.Tensor, min_area: float) -> torch.Tensor:
    """[B]: how many object colours the judge would read as objects, smoothly: each counts by
    sigmoid((share of frames with coverage >= MIN_AREA - 1/2) / SEEN_SHARE), its per-frame test
    itself a sigmoid of width SEEN_AREA x MIN_AREA (judge.read: MIN_AREA in at least half the
    frames). A fringe of a few pixels, which the judge ignores, hardly counts."""
    frames = torch.sigmoid((cov - min_area) / (SEEN_AREA * min_area)).mean(-1)  # [B, K]
    return torch.sigmoid((frames - 0.5) / SEEN_SHARE).sum(-1)


def _asked(pixels: torch.Tensor, captions: list[str], name: str) -> list[list[int]]:
    """The object-colour indices each caption asks for (ValueError on mismatched input)."""
    if pixels.dim() != 5 or pixels.shape[1] != 3 or pixels.shape[0] != len(captions):
        raise ValueError(f"{name} needs pixels [B, 3, T, H, W] and B captions, got "
                         f"{tuple(pixels.shape)} and {len(captions)} captions")
    names = list(world.COLOURS)
    return [[names.index(c) for c, _, _ in parse_caption(caption)] for caption in captions]


def toyworld_colour(pixels: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Per clip [B]: the mean presence of the caption's object colours, the judge's graded colour
    aspect made smooth; 0 for a caption that names no toyworld object (no gradient)."""
    asked, present = _asked(pixels, captions, "toyworld_colour"), _presence(*_object_coverage(pixels))
    return torch.stack([present[b, cs].mean() if cs else present[b].sum() * 0.0 for b, cs in enumerate(asked)])


def toyworld_colour_count(pixels: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Per clip [B]: the mean of `toyworld_colour` and a smooth count aspect, 1 - |seen - asked| /
    asked with seen the smooth number of objects the judge would read (`_seen`; judge.soft_score's
    count). Climbing colour alone on toyworld adds stray colours that the judge reads as extra
    objects (docs/experiments/soups-and-pixel-reward.md, session 26); this keeps the count in the reward."""
    asked = _asked(pixels, captions, "toyworld_colour_count")
    cov, min_area = _object_coverage(pixels)
    present, seen = _presence(cov, min_area), _seen(cov, min_area)
    out = []
    for b, cs in enumerate(asked):
        if not cs:
            out.append(present[b].sum() * 0.0)
            continue
        count = (1 - (seen[b] - len(cs)).abs() / len(cs)).clamp(min=0)
        out.append((present[b, cs].mean() + count) / 2)
    return torch.stack(out)
