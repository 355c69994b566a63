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
GROWTH = 1.6  # end-to-start area ratio that reads as grow (its inverse: shrink)
SHIFT = 0.12  # centroid shift, as a fraction of the frame, that reads as a direction
RISE = 0.06  # how far above both ends the centroid must rise to read as a bounce
SOFT_FILL = 0.25  # soft_score: fill this far outside a shape's band scores 0 on shape
FILL_BANDS = {"triangle": (0.0, 0.64), "circle": (0.64, 0.88), "square": (0.88, 1.0)}  # bounding-box fill read as each shape


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


def _fill(masks: np.ndarray) -> float:
    """Median share of its bounding box the mask fills (square 1.0, circle pi/4, triangle 1/2)."""
    ratios = []
    for m in masks:
        ys, xs = np.nonzero(m)
        if len(xs) < 4:
            continue
        box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
        ratios.append(len(xs) / box)
    return float(np.median(ratios)) if ratios else 0.0


def _shape(masks: np.ndarray) -> str:
    fill = _fill(masks)
    if fill > FILL_BANDS["square"][0]:
        return "square"
    return "circle" if fill > FILL_BANDS["circle"][0] else "triangle"


@dataclass(frozen=True)
class Track:
    """How a mask moved: centroid shift (fractions of the frame), end-to-start area ratio, and the
    centroid's highest point (`top`, smallest y) against the higher of its two ends (`ends`)."""
    dx: float
    dy: float
    growth: float  # float32, as computed from the pixel counts: the thresholds compare it as such
    top: float
    ends: float
    span: float  # vertical extent of the centroid's path


def _track(masks: np.ndarray, size: int) -> Track | None:
    present = [t for t, m in enumerate(masks) if m.sum() > 0]
    if len(present) < 2:
        return None
    cx = np.array([np.nonzero(masks[t])[1].mean() for t in present]) / size
    cy = np.array([np.nonzero(masks[t])[0].mean() for t in present]) / size
    area = np.array([masks[t].sum() for t in present], np.float32)
    k = max(1, len(present) // 4)  # average the ends over a quarter of the clip
    return Track(dx=cx[-k:].mean() - cx[:k].mean(), dy=cy[-k:].mean() - cy[:k].mean(),
                 growth=area[-k:].mean() / max(area[:k].mean(), 1.0),
                 top=cy.min(), ends=min(cy[0], cy[-1]), span=cy.max() - cy.min())


def _motion(masks: np.ndarray, size: int) -> str:
    return _read_motion(_track(masks, size))


def _read_motion(tr: Track | None) -> str:
    if tr is None:
        return "still"
    if tr.growth > GROWTH:
        return "grow"
    if tr.growth < 1 / GROWTH:
        return "shrink"
    if max(abs(tr.dx), abs(tr.dy)) > SHIFT:
        if abs(tr.dx) > abs(tr.dy):
            return "right" if tr.dx > 0 else "left"
        return "down" if tr.dy > 0 else "up"
    if tr.span > 0.1 and tr.top < tr.ends - RISE:
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


def _soft_motion(tr: Track | None, motion: str) -> float:
    """How far `tr` goes toward `motion`, in [0, 1]: 1 where `_motion` reads it so; else how far it
    went that way, as a share of the distance (SHIFT, GROWTH, RISE) at which `_motion` would."""
    if _read_motion(tr) == motion:
        return 1.0
    if tr is None:
        return 0.0
    along = {"right": tr.dx, "left": -tr.dx, "down": tr.dy, "up": -tr.dy}
    scale = float(np.log(tr.growth)) / float(np.log(GROWTH))  # +1 at grow's threshold, -1 at shrink's
    shift = max(abs(tr.dx), abs(tr.dy)) / SHIFT
    if motion in along:
        return float(np.clip(along[motion] / SHIFT, 0, 1))
    if motion == "grow":
        return float(np.clip(scale, 0, 1))
    if motion == "shrink":
        return float(np.clip(-scale, 0, 1))
    if motion == "bounce":
        return float(np.clip((tr.ends - tr.top) / RISE, 0, 1) * np.clip(2 - shift, 0, 1))
    return float(np.clip(2 - max(shift, abs(scale)), 0, 1))  # still: 0 at twice a move's distance


def soft_score(frames: np.ndarray, spec) -> dict[str, float]:
    """`score` made graded, for a reward that a latent reward model can regress (the 0/1 aspects
    give it little to fit): colour is the share of frames in which the object's colour covers
    MIN_AREA (partly, in proportion); shape, 1 inside the shape's fill band, falling to 0
    SOFT_FILL outside it; motion, `_soft_motion`; count, 1 - |objects seen - objects asked| /
    objects asked. Shape and motion are read on the frames where the object is there at all."""
    t, h, w, _ = frames.shape
    labels = assign(frames)
    min_area = MIN_AREA_FRACTION * h * w
    names = list(world.COLOURS)
    parts = {"colour": [], "shape": [], "motion": []}
    for obj in spec.objects:
        masks = labels == names.index(obj.colour)
        areas = masks.reshape(t, -1).sum(1)
        parts["colour"].append(float(np.minimum(areas / min_area, 1).mean()))
        shown = masks & (areas >= min_area)[:, None, None]  # frames where the object is there at all
        if not shown.any():
            parts["shape"].append(0.0)
            parts["motion"].append(0.0)
            continue
        low, high = FILL_BANDS[obj.shape]
        fill = _fill(shown)
        parts["shape"].append(float(np.clip(1 - max(low - fill, fill - high, 0) / SOFT_FILL, 0, 1)))
        parts["motion"].append(_soft_motion(_track(shown, w), obj.motion))
    n = len(spec.objects)
    out = {k: float(np.mean(v)) for k, v in parts.items()}
    out["count"] = max(0.0, 1 - abs(len(read(frames)) - n) / n)
    return out
