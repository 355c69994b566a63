"""A second reader of toyworld clips, for grading only: no training code may import it.

The MiniBench judge (judge.py) is also a training signal: the `toyworld-semantic` reward, the
latent reward model and the pixel rewards are the judge or its parts, so a student tuned on them
would be graded by its own reward. This reader answers the same questions (which colours, shapes,
motions and how many objects) by another method, written without the judge's code:

- the background is estimated per clip (the median colour of the frame border), not taken from
  the palette, and a pixel is foreground when it is far from it;
- a foreground pixel's colour is named by its hue angle (or, unsaturated and bright, white), not
  by the nearest palette entry;
- objects are connected components of foreground pixels in one frame, named by their pixels'
  majority colour, linked across frames into tracks by nearest centroid;
- shape is the ratio of the farthest pixel from the centroid to the radius of a disc of the same
  area (disc 1, square ~1.25, triangle ~1.55), not bounding-box fill;
- motion is a least-squares line fitted to the whole track (x, y and log area against time),
  each candidate motion's strength measured against how far the renderer moves an object, the
  strongest taken; not the judge's ends-of-clip thresholds;
- count is read per frame: the clip's count is right when most frames show exactly the asked
  number of objects (so splitting, flicker and objects that vanish mid-clip count against it).

Its thresholds are set on renderer clips (tests/test_eval_reader.py checks it reads them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Hue (degrees) at the centre of each colour name; a pixel takes the nearest. Saturated colours only.
HUES = {"red": 0.0, "orange": 29.0, "yellow": 54.0, "green": 127.0, "cyan": 183.0, "blue": 227.0, "purple": 279.0}
WHITE = "white"
FOREGROUND_DISTANCE = 90.0  # sRGB distance from the estimated background that makes a pixel foreground
MIN_VALUE = 0.45  # brightness (max channel / 255) below which a pixel is not an object's
WHITE_SATURATION = 0.2  # less saturated (and bright): white
MIN_PIXELS = 8  # a component smaller than this (at 64 x 64; scaled by area) is noise
SPLIT_SHARE = 0.25  # a colour holding this share of a component is an object of its own
LINK_DISTANCE = 0.2  # the farthest (fraction of the frame) a track's centroid moves between frames
PERSISTENT = 0.5  # a track seen in at least this share of frames is an object
COUNT_FRAMES = 0.8  # the count is right when this share of frames shows the asked number
# Shape: the farthest pixel's distance over the equal-area disc's radius.
DISC_SQUARE, SQUARE_TRIANGLE = 1.18, 1.31
# Motion: what the renderer does over a clip (render.TRAVEL, the grow/shrink area ratio 1.4^2/0.6^2,
# the vertical spread of a bounce about its line), and the share of it that reads as the motion.
TRAVEL, LOG_GROWTH, BOUNCE_SPREAD = 0.35, float(np.log((1.4 / 0.6) ** 2)), 0.07
MOTION_STRENGTH = 0.4
DIRECTED = {"left": "right", "right": "left", "up": "down", "down": "up", "grow": "shrink", "shrink": "grow"}


@dataclass(frozen=True)
class Blob:
    frame: int
    colour: str
    x: float  # centroid, fraction of the width
    y: float
    area: float  # pixels
    spread: float  # farthest pixel over the equal-area disc's radius


@dataclass(frozen=True)
class Reading:
    colour: str
    shape: str
    motion: str
    frames: int  # how many frames the track was seen in
    area: float  # mean pixels


def background(frames: np.ndarray) -> np.ndarray:
    """The clip's background colour: the median of its border pixels over all frames."""
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
    return np.median(border.reshape(-1, 3).astype(np.float32), axis=0)


def hue(rgb: np.ndarray) -> np.ndarray:
    """Hue angle in degrees [0, 360) of RGB rows [N, 3] (the hexagonal HSV hue)."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    top, low = rgb.max(1), rgb.min(1)
    span = np.maximum(top - low, 1e-6)
    h = np.where(top == r, ((g - b) / span) % 6, np.where(top == g, (b - r) / span + 2, (r - g) / span + 4))
    return (60 * h) % 360


def colour_names(frames: np.ndarray) -> np.ndarray:
    """A colour name index per pixel [T, H, W]: 0..len(HUES)-1 for the hues, len(HUES) for white,
    -1 for background or dim pixels."""
    f = frames.astype(np.float32)
    far = np.linalg.norm(f - background(frames), axis=-1) > FOREGROUND_DISTANCE
    top = f.max(-1)
    value = top / 255
    saturation = (top - f.min(-1)) / np.maximum(top, 1)
    names = np.full(frames.shape[:3], -1, np.int64)
    fg = far & (value >= MIN_VALUE)
    if fg.any():
        h = hue(f[fg])
        centres = np.array(list(HUES.values()), np.float32)
        gap = np.abs((h[:, None] - centres[None] + 180) % 360 - 180)
        named = gap.argmin(1)
        named[saturation[fg] < WHITE_SATURATION] = len(HUES)
        names[fg] = named
    return names


def blobs(frames: np.ndarray) -> list[Blob]:
    """The objects' pieces in each frame: connected components of foreground pixels, each named by
    the colour most of its pixels have (a component two colours each hold a quarter of is split
    between them: two objects that touch); largest first within a frame."""
    t, h, w, _ = frames.shape
    names = colour_names(frames)
    labels = list(HUES) + [WHITE]
    min_pixels = MIN_PIXELS * h * w / 64**2
    found = []
    for i in range(t):
        comp, n = ndimage.label(names[i] >= 0, structure=np.ones((3, 3)))
        for k in range(1, n + 1):
            inside = comp == k
            if inside.sum() < min_pixels:
                continue
            counts = np.bincount(names[i][inside], minlength=len(labels))
            major = [c for c in np.argsort(-counts) if counts[c] >= max(min_pixels, SPLIT_SHARE * inside.sum())]
            for c in major or [int(counts.argmax())]:
                mask = inside if len(major) <= 1 else inside & (names[i] == c)
                found.append(_blob(i, labels[c], mask))
    return found


def _blob(frame: int, colour: str, mask: np.ndarray) -> Blob:
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    reach = np.sqrt(((xs - cx) ** 2 + (ys - cy) ** 2).max()) + 0.5  # to the pixel's edge
    return Blob(frame, colour, (cx + 0.5) / w, (cy + 0.5) / h, float(len(xs)), float(reach / np.sqrt(len(xs) / np.pi)))


def _tracks(found: list[Blob], frames: int) -> list[list[Blob]]:
    """Link blobs of one colour across frames: each frame's blobs extend the nearest open track
    (within LINK_DISTANCE) of that colour, largest blob first; the rest open new tracks."""
    tracks: list[list[Blob]] = []
    for t in range(frames):
        taken: set[int] = set()
        for blob in sorted((b for b in found if b.frame == t), key=lambda b: -b.area):
            best, best_d = None, LINK_DISTANCE
            for k, track in enumerate(tracks):
                last = track[-1]
                if k in taken or last.colour != blob.colour or last.frame >= t:
                    continue
                d = float(np.hypot(last.x - blob.x, last.y - blob.y))
                if d <= best_d:
                    best, best_d = k, d
            if best is None:
                tracks.append([blob])
                taken.add(len(tracks) - 1)
            else:
                tracks[best].append(blob)
                taken.add(best)
    return tracks


def _shape(track: list[Blob]) -> str:
    spread = float(np.median([b.spread for b in track]))
    if spread < DISC_SQUARE:
        return "circle"
    return "square" if spread < SQUARE_TRIANGLE else "triangle"


def motion_strengths(track: list[Blob], frames: int) -> dict[str, float]:
    """Each motion's strength in the track, 1 = as far as the renderer takes it over a clip: the
    fitted line's slope of x, y (fractions of the frame) and log area over the clip's duration,
    and the vertical spread about the line (a bounce)."""
    if len(track) < 3:
        return {}
    u = np.array([b.frame for b in track], np.float64) / max(frames - 1, 1)
    design = np.stack([np.ones_like(u), u], 1)
    fit = {}
    for key, values in (("x", [b.x for b in track]), ("y", [b.y for b in track]),
                        ("size", np.log([b.area for b in track]))):
        coef, *_ = np.linalg.lstsq(design, np.asarray(values, np.float64), rcond=None)
        fit[key] = (coef[1], np.asarray(values) - design @ coef)
    dx, dy, ds = fit["x"][0] / TRAVEL, fit["y"][0] / TRAVEL, fit["size"][0] / LOG_GROWTH
    bounce = float(fit["y"][1].std()) / BOUNCE_SPREAD
    return {"right": dx, "left": -dx, "down": dy, "up": -dy, "grow": ds, "shrink": -ds, "bounce": bounce}


def _motion(track: list[Blob], frames: int) -> str:
    strengths = motion_strengths(track, frames)
    if not strengths:
        return "still"
    name, strength = max(strengths.items(), key=lambda kv: kv[1])
    return name if strength >= MOTION_STRENGTH else "still"


def read(frames: np.ndarray) -> tuple[list[Reading], list[int]]:
    """(the objects of a uint8 clip [T, H, W, 3], biggest first; the number of blobs in each frame)."""
    t = frames.shape[0]
    found = blobs(frames)
    objects = []
    for track in _tracks(found, t):
        if len(track) >= PERSISTENT * t:
            objects.append(Reading(track[0].colour, _shape(track), _motion(track, t), len(track),
                                   float(np.mean([b.area for b in track]))))
    per_frame = np.bincount([b.frame for b in found], minlength=t).tolist()
    return sorted(objects, key=lambda o: -o.area), per_frame


def score(frames: np.ndarray, spec) -> dict[str, float]:
    """Per-aspect correctness against a ClipSpec (colour, shape, motion, count: shares of the asked
    objects, count 0 or 1), plus two counts: `directed`, the asked directed motions (left/right,
    up/down, grow/shrink), and `opposite`, how many of those were read as their opposite."""
    objects, per_frame = read(frames)
    by_colour: dict[str, Reading] = {}
    for o in objects:  # the biggest object of a colour stands for it
        by_colour.setdefault(o.colour, o)
    colour = shape = motion = opposite = directed = 0.0
    for obj in spec.objects:
        seen = by_colour.get(obj.colour)
        colour += seen is not None
        shape += seen is not None and seen.shape == obj.shape
        motion += seen is not None and seen.motion == obj.motion
        if obj.motion in DIRECTED:
            directed += 1
            opposite += seen is not None and seen.motion == DIRECTED[obj.motion]
    n = len(spec.objects)
    right_count = np.mean([c == n for c in per_frame]) >= COUNT_FRAMES
    return {"colour": colour / n, "shape": shape / n, "motion": motion / n, "count": float(right_count),
            "directed": directed, "opposite": opposite}
