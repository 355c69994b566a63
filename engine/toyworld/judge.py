"""The MiniBench judge: reads colour, shape, motion and object count off a toyworld clip.

Analytic, from the renderer's palette and geometry (no trained model): each pixel is assigned
to the nearest palette or background colour (within `MAX_COLOUR_DISTANCE`); an object is a
palette colour covering at least `MIN_AREA` pixels in most frames. Its shape comes from how
much of its bounding box it fills (square 1.0, circle pi/4, triangle 1/2), its motion from the
trajectory of its centroid and the change of its area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.toyworld import world

PALETTE_NAMES = list(world.COLOURS) + [f"bg:{b}" for b in world.BACKGROUNDS]
PALETTE = np.array(list(world.COLOURS.values()) + list(world.BACKGROUNDS.values()), np.float32)
MAX_COLOUR_DISTANCE = 70.0  # sRGB units; farther pixels are "unassigned" (artefacts)
MIN_AREA_FRACTION = 0.004  # of the frame (about 16 pixels at 64x64)


@dataclass(frozen=True)
class ObjectReading:
    colour: str
    shape: str
    motion: str
    area: float  # mean pixels per frame


def assign(frames: np.ndarray) -> np.ndarray:
    """Palette index per pixel [T, H, W] (len(PALETTE) = unassigned)."""
    px = frames.reshape(-1, 3).astype(np.float32)
    dist = np.linalg.norm(px[:, None, :] - PALETTE[None], axis=-1)  # [N, P]
    idx = dist.argmin(1)
    idx[dist.min(1) > MAX_COLOUR_DISTANCE] = len(PALETTE)
    return idx.reshape(frames.shape[:3])


def _shape(masks: np.ndarray) -> str:
    ratios = []
    for m in masks:
        ys, xs = np.nonzero(m)
        if len(xs) < 4:
            continue
        box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
        ratios.append(len(xs) / box)
    fill = float(np.median(ratios)) if ratios else 0.0
    if fill > 0.88:
        return "square"
    return "circle" if fill > 0.64 else "triangle"


def _motion(masks: np.ndarray, size: int) -> str:
    present = [t for t, m in enumerate(masks) if m.sum() > 0]
    if len(present) < 2:
        return "still"
    cx = np.array([np.nonzero(masks[t])[1].mean() for t in present]) / size
    cy = np.array([np.nonzero(masks[t])[0].mean() for t in present]) / size
    area = np.array([masks[t].sum() for t in present], np.float32)
    k = max(1, len(present) // 4)  # average the ends over a quarter of the clip
    growth = area[-k:].mean() / max(area[:k].mean(), 1.0)
    if growth > 1.6:
        return "grow"
    if growth < 1 / 1.6:
        return "shrink"
    dx, dy = cx[-k:].mean() - cx[:k].mean(), cy[-k:].mean() - cy[:k].mean()
    if max(abs(dx), abs(dy)) > 0.12:
        if abs(dx) > abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"
    if cy.max() - cy.min() > 0.1 and cy.min() < min(cy[0], cy[-1]) - 0.06:
        return "bounce"
    return "still"


def read(frames: np.ndarray) -> list[ObjectReading]:
    """Objects seen in a clip uint8 [T, H, W, 3], largest first."""
    t, h, w, _ = frames.shape
    labels = assign(frames)
    min_area = MIN_AREA_FRACTION * h * w
    found = []
    for ci, colour in enumerate(world.COLOURS):
        masks = labels == ci
        areas = masks.reshape(t, -1).sum(1)
        if (areas >= min_area).mean() < 0.5:
            continue
        found.append(ObjectReading(colour, _shape(masks), _motion(masks, w), float(areas.mean())))
    return sorted(found, key=lambda o: -o.area)


def score(frames: np.ndarray, spec) -> dict[str, float]:
    """Per-aspect correctness (0/1 averaged over the prompt's objects) against a ClipSpec."""
    readings = {o.colour: o for o in read(frames)}
    colour = shape = motion = 0.0
    for obj in spec.objects:
        seen = readings.get(obj.colour)
        colour += seen is not None
        shape += seen is not None and seen.shape == obj.shape
        motion += seen is not None and seen.motion == obj.motion
    n = len(spec.objects)
    return {"colour": colour / n, "shape": shape / n, "motion": motion / n,
            "count": float(len(readings) == n)}
