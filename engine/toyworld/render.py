"""Procedural renderer of captioned toyworld clips (docs/ARCHITECTURE.md §5.7), deterministic by seed.

A clip is described by a `ClipSpec` (background plus one or two `ObjectSpec`s); `render`
turns it into uint8 frames [T, H, W, 3] with anti-aliased edges (coverage from a signed
distance), and `caption` words it from templates with synonyms. `sample_clip(split, index)`
is the one entry point the datasets and MiniBench use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.toyworld import world

SPLITS = {"train": 0, "public-eval": 1, "public-heldout": 2}
TRAVEL = 0.35  # fraction of the frame a moving object crosses over the clip
BOUNCE_HEIGHT = 0.25
SCALE_RANGE = (0.6, 1.4)  # grow goes from the first to the second, shrink the other way


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str
    motion: str
    x: float  # start centre, fraction of width
    y: float  # start centre, fraction of height
    radius: float  # fraction of width


@dataclass(frozen=True)
class ClipSpec:
    background: str
    objects: tuple[ObjectSpec, ...]


def trajectory(obj: ObjectSpec, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre x, centre y and radius per frame (fractions of the frame), each [frames]."""
    u = np.linspace(0.0, 1.0, frames)
    x = np.full(frames, obj.x)
    y = np.full(frames, obj.y)
    scale = np.ones(frames)
    if obj.motion == "left":
        x = obj.x - TRAVEL * u
    elif obj.motion == "right":
        x = obj.x + TRAVEL * u
    elif obj.motion == "up":
        y = obj.y - TRAVEL * u
    elif obj.motion == "down":
        y = obj.y + TRAVEL * u
    elif obj.motion == "bounce":
        y = obj.y - BOUNCE_HEIGHT * np.abs(np.sin(2 * np.pi * u))
    elif obj.motion == "grow":
        scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * u
    elif obj.motion == "shrink":
        scale = SCALE_RANGE[1] - (SCALE_RANGE[1] - SCALE_RANGE[0]) * u
    return x, y, obj.radius * scale


REVERSED_MOTION = {"left": "right", "right": "left", "up": "down", "down": "up", "bounce": "bounce",
                   "grow": "shrink", "shrink": "grow", "still": "still"}


def reversed_clip(spec: ClipSpec, frames: int = 17) -> ClipSpec:
    """The clip played backwards: each object starts where it ended, with the opposite motion
    (bounce and still are their own reverse). `render(reversed_clip(s))` is `render(s)[::-1]`
    to rounding, and a reversed clip is a sample of the same distribution (start ranges are
    symmetric), so a training loop can pair a clip with its reverse under the reversed caption."""
    objects = []
    for obj in spec.objects:
        x, y, _ = trajectory(obj, frames)
        objects.append(ObjectSpec(obj.shape, obj.colour, REVERSED_MOTION[obj.motion], float(x[-1]), float(y[-1]),
                                  obj.radius))
    return ClipSpec(spec.background, tuple(objects))


def _signed_distance(shape: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    """Signed distance in pixels from pixel centres (px, py relative to the centre) to the shape."""
    if shape == "circle":
        return np.hypot(px, py) - r
    if shape == "square":
        half = 0.85 * r
        qx, qy = np.abs(px) - half, np.abs(py) - half
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(qx, qy), 0)
    if shape == "triangle":  # equilateral, apex up (image y grows downward)
        circum = 1.25 * r
        inradius = circum / 2
        shift = py - circum / 4  # centre the triangle's bounding box on the object centre
        edges = [(0.0, 1.0), (np.sqrt(3) / 2, -0.5), (-np.sqrt(3) / 2, -0.5)]
        return np.max([nx * px + ny * shift for nx, ny in edges], axis=0) - inradius
    raise ValueError(f"unknown shape {shape!r}; expected one of {world.SHAPES}")


def render(spec: ClipSpec, frames: int = 17, size: int = 64) -> np.ndarray:
    """Render a clip: uint8 [frames, size, size, 3]."""
    return _draw(spec, [trajectory(obj, frames) for obj in spec.objects], frames, size)


CLIP_FRAMES = 17  # the frames of one clip: a long clip moves at a clip's pace per frame
WRAP_MARGIN = 1.3  # radii past an edge where a wrapping object is wholly out of view (a square's corner: 1.2)


def long_trajectory(obj: ObjectSpec, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre x, centre y and radius per frame of a clip longer than one (the ground truth of a
    stream, docs/ARCHITECTURE.md §5.7): the object keeps its clip's motion at the clip's pace.
    A directed mover leaves by one edge and comes back in by the opposite one once it is wholly out
    of view (the frame wraps, with a margin of WRAP_MARGIN radii); a bounce keeps bouncing; grow and
    shrink repeat their clip (a new object starting the change again where the last one ended it);
    still stays. Its first CLIP_FRAMES frames are `trajectory(obj, CLIP_FRAMES)`."""
    if frames < 1:
        raise ValueError(f"a clip has at least one frame, got {frames}")
    u = np.arange(frames) / (CLIP_FRAMES - 1)  # clips elapsed
    x, y, radius = (np.full(frames, v) for v in (obj.x, obj.y, obj.radius))
    along = {"left": (-1, "x"), "right": (1, "x"), "up": (-1, "y"), "down": (1, "y")}
    if obj.motion in along:
        sign, axis = along[obj.motion]
        margin = WRAP_MARGIN * obj.radius
        start = obj.x if axis == "x" else obj.y
        moved = (start + sign * TRAVEL * u + margin) % (1 + 2 * margin) - margin
        x, y = (moved, y) if axis == "x" else (x, moved)
    elif obj.motion == "bounce":
        y = obj.y - BOUNCE_HEIGHT * np.abs(np.sin(2 * np.pi * u))
    elif obj.motion in ("grow", "shrink"):
        phase = (np.arange(frames) % CLIP_FRAMES) / (CLIP_FRAMES - 1)
        low, high = SCALE_RANGE if obj.motion == "grow" else SCALE_RANGE[::-1]
        radius = obj.radius * (low + (high - low) * phase)
    return x, y, radius


def render_long(spec: ClipSpec, frames: int, size: int = 64) -> np.ndarray:
    """Render a clip of any length with `long_trajectory`: uint8 [frames, size, size, 3]."""
    return _draw(spec, [long_trajectory(obj, frames) for obj in spec.objects], frames, size)


def _draw(spec: ClipSpec, paths: list[tuple[np.ndarray, np.ndarray, np.ndarray]], frames: int,
          size: int) -> np.ndarray:
    """Frames of the spec's background with each object drawn along its path (x, y, radius per frame)."""
    grid = np.arange(size) + 0.5
    gx, gy = np.meshgrid(grid, grid)  # [H, W] pixel centres
    video = np.empty((frames, size, size, 3), np.float32)
    video[:] = np.array(world.BACKGROUNDS[spec.background], np.float32)
    for obj, (xs, ys, rs) in zip(spec.objects, paths):
        colour = np.array(world.COLOURS[obj.colour], np.float32)
        for t in range(frames):
            d = _signed_distance(obj.shape, gx - xs[t] * size, gy - ys[t] * size, rs[t] * size)
            cover = np.clip(0.5 - d, 0.0, 1.0)[..., None]  # [H, W, 1]
            video[t] = video[t] * (1 - cover) + colour * cover
    return np.round(video).astype(np.uint8)


def _pick(rng: np.random.Generator, words: tuple[list[str], list[str]], heldout: bool,
          extra: list[str] = ()) -> str:
    seen, unseen = words
    pool = unseen if heldout and rng.random() < 0.5 else seen + list(extra)
    return pool[int(rng.integers(len(pool)))]


def caption(spec: ClipSpec, rng: np.random.Generator, heldout_words: bool = False,
            train_words: bool = False) -> str:
    """Word a clip from the templates; `heldout_words` mixes in the paraphrases kept back,
    `train_words` the words used only in training (`world.TRAIN_ONLY_WORDS`)."""
    extra = world.TRAIN_ONLY_WORDS if train_words else {"colour": {}, "shape": {}, "motion": {}}
    parts = []
    for obj in spec.objects:
        colour = _pick(rng, world.COLOUR_WORDS[obj.colour], heldout_words, extra["colour"].get(obj.colour, ()))
        shape = _pick(rng, world.SHAPE_WORDS[obj.shape], heldout_words, extra["shape"].get(obj.shape, ()))
        motion = _pick(rng, world.MOTION_WORDS[obj.motion], heldout_words, extra["motion"].get(obj.motion, ()))
        parts.append(f"{colour} {shape} {motion}")
    obj_text = " and ".join(_article(p) for p in parts)
    bg = _pick(rng, world.BACKGROUND_WORDS[spec.background], heldout_words)
    template = _pick(rng, world.TEMPLATES, heldout_words)
    return template.format(obj=obj_text, bg=bg)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _sample_object(rng: np.random.Generator, combo: tuple[str, str, str]) -> ObjectSpec:
    colour, shape, motion = combo
    radius = float(rng.uniform(0.10, 0.15))
    lo, hi = 0.2, 0.8
    x = float(rng.uniform(lo, hi))
    y = float(rng.uniform(lo, hi))
    if motion == "left":
        x = float(rng.uniform(lo + TRAVEL, hi))
    elif motion == "right":
        x = float(rng.uniform(lo, hi - TRAVEL))
    elif motion == "up":
        y = float(rng.uniform(lo + TRAVEL, hi))
    elif motion == "down":
        y = float(rng.uniform(lo, hi - TRAVEL))
    elif motion == "bounce":
        y = float(rng.uniform(lo + BOUNCE_HEIGHT, hi))
    return ObjectSpec(shape, colour, motion, x, y, radius)


def _apart(a: ObjectSpec, b: ObjectSpec, frames: int = 17) -> bool:
    ax, ay, ar = trajectory(a, frames)
    bx, by, br = trajectory(b, frames)
    return bool(np.all(np.hypot(ax - bx, ay - by) > ar + br + 0.04))


def sample_clip(split: str, index: int, train_words: bool = False) -> tuple[ClipSpec, str]:
    """The `index`-th clip of a split with its caption; the same arguments give the same clip.

    `train_words` words train clips from `world.TRAIN_ONLY_WORDS` as well (the teacher bake's
    wider vocabulary); the evaluation splits never use those words.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    if index < 0:
        raise ValueError(f"clip index must be >= 0, got {index}")
    rng = np.random.default_rng([SPLITS[split], index])
    held = world.heldout_combos()
    seen = [c for c in world.all_combos() if c not in held]
    pool = sorted(held) if split == "public-heldout" else seen
    first = _sample_object(rng, pool[int(rng.integers(len(pool)))])
    objects = [first]
    if rng.random() < 0.35:
        for _ in range(50):
            other = _sample_object(rng, seen[int(rng.integers(len(seen)))])
            if other.colour != first.colour and _apart(first, other):
                objects.append(other)
                break
    background = list(world.BACKGROUNDS)[int(rng.integers(len(world.BACKGROUNDS)))]
    spec = ClipSpec(background, tuple(objects))
    return spec, caption(spec, rng, heldout_words=split == "public-heldout",
                         train_words=train_words and split == "train")
