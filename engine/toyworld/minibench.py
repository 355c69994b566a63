"""MiniBench: a VBench-like evaluator for toyworld computed with nothing downloaded.

For the first `prompts` clips of a split and `seeds` seeds each, a clip source (the renderer
itself, or a model through the engine) makes a clip from the caption; then
- semantic: the judge's colour, shape, motion and object-count accuracy against the prompt;
- quality: temporal flicker (1 - mean |frame diff| of background pixels / 255), motion
  smoothness (1 - mean |frame_t - (frame_t-1 + frame_t+1) / 2| / 255, VBench's
  interpolation idea without a learnt interpolator), sharpness (edge energy relative to the
  renderer's clip of the same spec, capped at 1) and a Fréchet distance to renderer clips in
  the project's own feature space (palette histogram, edges, motion and blob statistics),
  mapped to a score by exp(-FD / 10);
- diversity: Vendi score across seeds of a prompt, rescaled to [0, 1] ((VS - 1) / (K - 1)),
  RBF kernel on 16x16 pixel vectors.
Total = 100 x (semantic + quality) / 2. All figures are means over clips.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import linalg

from engine.toyworld import judge, world
from engine.toyworld.render import REVERSED_MOTION, ClipSpec, _sample_object, render, sample_clip

ClipSource = Callable[[str, int], np.ndarray]  # (prompt, seed) -> uint8 [T, H, W, 3]
FD_SCALE = 10.0
DIVERSITY_BANDWIDTH = 0.15  # RMS pixel distance (in [0, 1] units) at which similarity is 1/e


def renderer_source(specs: dict[str, ClipSpec]) -> ClipSource:
    """The renderer as a clip source: same objects, positions re-drawn per seed."""

    def make(prompt: str, seed: int) -> np.ndarray:
        spec = specs[prompt]
        if seed == 0:
            return render(spec)
        rng = np.random.default_rng([7, seed, len(prompt)])
        objects = tuple(_sample_object(rng, (o.colour, o.shape, o.motion)) for o in spec.objects)
        return render(ClipSpec(spec.background, objects))

    return make


def _edge_energy(frames: np.ndarray) -> float:
    g = frames.astype(np.float32).mean(-1)
    return float(np.abs(np.diff(g, axis=1)).mean() + np.abs(np.diff(g, axis=2)).mean())


def quality(frames: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    f = frames.astype(np.float32)
    labels = judge.assign(frames)
    background = labels >= len(world.COLOURS)  # background or unassigned pixels
    still = background[1:] & background[:-1]
    diff = np.abs(f[1:] - f[:-1]).mean(-1)
    flicker = 1 - (diff[still].mean() / 255 if still.any() else 0.0)
    interp = np.abs(f[1:-1] - (f[:-2] + f[2:]) / 2).mean() / 255 if len(f) > 2 else 0.0
    sharp = min(1.0, _edge_energy(frames) / max(_edge_energy(reference), 1e-6))
    return {"flicker": float(flicker), "smoothness": float(1 - interp), "sharpness": sharp}


def features(frames: np.ndarray) -> np.ndarray:
    """The project's clip feature vector (13 palette shares + 9 statistics) for the FD."""
    labels = judge.assign(frames)
    hist = np.bincount(labels.ravel(), minlength=len(judge.PALETTE) + 1) / labels.size  # 13
    f = frames.astype(np.float32)
    objects = judge.read(frames)
    areas = [o.area / labels[0].size for o in objects] + [0.0, 0.0]
    extra = [
        _edge_energy(frames) / 10, np.abs(f[1:] - f[:-1]).mean() / 10, f.std() / 100,
        len(objects) / 2, areas[0] * 10, areas[1] * 10,
        np.abs(f[1:-1] - (f[:-2] + f[2:]) / 2).mean() / 10,
        hist[-1] * 10,
        f.mean() / 100,
    ]
    return np.concatenate([hist, extra]).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) over rows of feature matrices."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.cov(a, rowvar=False) + 1e-6 * np.eye(a.shape[1])
    s_b = np.cov(b, rowvar=False) + 1e-6 * np.eye(b.shape[1])
    root = linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def vendi_diversity(clips: list[np.ndarray]) -> float:
    """(Vendi score - 1) / (K - 1) of K clips: 0 when all equal, 1 when all unrelated."""
    k = len(clips)
    if k < 2:
        return 0.0
    x = np.stack([c[:, ::4, ::4].astype(np.float32).ravel() / 255 for c in clips])  # 16x16
    d2 = ((x[:, None] - x[None]) ** 2).mean(-1)  # mean squared pixel distance
    kernel = np.exp(-d2 / DIVERSITY_BANDWIDTH**2)
    eig = np.clip(np.linalg.eigvalsh(kernel / k), 0, None)
    eig = eig[eig > 1e-12]
    vendi = float(np.exp(-(eig * np.log(eig)).sum()))
    return (vendi - 1) / (k - 1)


def direction_reads(frames: np.ndarray, spec) -> tuple[int, int]:
    """(objects asked to move in a direction: left/right, up/down, grow/shrink; how many of
    those the judge reads moving the opposite way): the teacher's direction error, which the
    motion accuracy hides among objects it loses or reads still."""
    readings = {o.colour: o for o in judge.read(frames)}
    directed = opposite = 0
    for obj in spec.objects:
        if REVERSED_MOTION[obj.motion] == obj.motion:
            continue
        directed += 1
        seen = readings.get(obj.colour)
        opposite += seen is not None and seen.motion == REVERSED_MOTION[obj.motion]
    return directed, opposite


ASPECTS = ("colour", "shape", "motion", "count")
Reader = Callable[[np.ndarray, object], dict]  # (clip, ClipSpec) -> ASPECTS' scores, "directed", "opposite"


def evaluate(source: ClipSource | None, split: str = "public-eval", prompts: int = 32,
             seeds: int = 2, first: int = 0, readers: dict[str, Reader] | None = None) -> dict:
    """MiniBench over `prompts` captions (the split's clips `first`, `first` + 1, ...) x `seeds`
    seeds; `source=None` scores the renderer. A `first` past the prompts a choice between models
    was made on gives a confirmation on prompts that choice never saw. `readers` score the same
    clips again by other readers (the independent one: engine/toyworld/eval_reader.py, which this
    module does not import, since training code imports this one); each one's semantic score,
    parts and per-prompt means come under report["readers"][name]."""
    if prompts < 2 or seeds < 1 or first < 0:
        raise ValueError(f"need prompts >= 2, seeds >= 1 and first >= 0, got prompts={prompts}, seeds={seeds}, "
                         f"first={first}")
    items = [sample_clip(split, i) for i in range(first, first + prompts)]
    specs = {caption: spec for spec, caption in items}
    source = source or renderer_source(specs)
    sem, qual, feats, ref_feats, diversity, per_prompt, directed = [], [], [], [], [], [], []
    others: dict[str, list[dict]] = {}
    for spec, caption in items:
        reference = render(spec)
        ref_feats.append(features(reference))
        clips = [source(caption, seed) for seed in range(seeds)]
        for clip in clips:
            sem.append(judge.score(clip, spec))
            directed.append(direction_reads(clip, spec))
            for name, reader in (readers or {}).items():
                others.setdefault(name, []).append(reader(clip, spec))
            qual.append(quality(clip, reference))
            feats.append(features(clip))
        diversity.append(vendi_diversity(clips))
        per_prompt.append(np.mean([np.mean(list(s.values())) for s in sem[-seeds:]]))  # semantic, over its seeds
    semantic = {k: float(np.mean([s[k] for s in sem])) for k in sem[0]}
    quality_means = {k: float(np.mean([q[k] for q in qual])) for k in qual[0]}
    fd = frechet_distance(np.stack(feats), np.stack(ref_feats))
    quality_means["fd"] = fd
    quality_means["fd_score"] = float(np.exp(-fd / FD_SCALE))
    semantic_score = float(np.mean(list(semantic.values())))
    quality_score = float(np.mean([quality_means[k] for k in ("flicker", "smoothness", "sharpness", "fd_score")]))
    # The total's standard error from the prompt-to-prompt spread of the semantic score (a prompt's
    # seeds are not independent draws). The quality parts are left out (FD is one set statistic),
    # so it is a floor on the total's error.
    total_se = 50 * float(np.std(per_prompt, ddof=1)) / np.sqrt(prompts)
    asked, opposite = np.sum(directed, axis=0) if directed else (0, 0)
    return {
        "split": split, "prompts": prompts, "seeds": seeds, "first": first,
        "semantic": semantic_score, "semantic_parts": semantic,
        "quality": quality_score, "quality_parts": quality_means,
        "diversity": float(np.mean(diversity)) if seeds > 1 else None,
        "total": 100 * (semantic_score + quality_score) / 2, "total_se": total_se,
        "directed": int(asked), "opposite": _share(opposite, asked),
        "semantic_per_prompt": [float(v) for v in per_prompt],
        "readers": {name: _reader_report(scores, seeds) for name, scores in others.items()},
    }


def _share(part: float, whole: float) -> float:
    return float(part / whole) if whole else 0.0


def _reader_report(scores: list[dict], seeds: int) -> dict:
    """A reader's means over clips (in prompt order, `seeds` clips a prompt)."""
    parts = {k: float(np.mean([s[k] for s in scores])) for k in ASPECTS}
    clip_means = [np.mean([s[k] for k in ASPECTS]) for s in scores]
    per_prompt = [float(np.mean(clip_means[i:i + seeds])) for i in range(0, len(scores), seeds)]
    return {"semantic": float(np.mean(list(parts.values()))), "semantic_parts": parts,
            "opposite": _share(sum(s["opposite"] for s in scores), sum(s["directed"] for s in scores)),
            "semantic_se": float(np.std(per_prompt, ddof=1)) / np.sqrt(len(per_prompt)),
            "semantic_per_prompt": per_prompt}


def paired_difference(a: dict, b: dict) -> dict:
    """Report `a`'s total minus report `b`'s, with the standard error of that difference from the
    prompt-to-prompt spread of the per-prompt semantic difference (both reports score the same
    prompts and seeds, so what a prompt makes easy or hard cancels). Like `total_se` it leaves
    the quality parts out: a floor on the difference's error."""
    same = ("split", "prompts", "seeds", "first")
    if any(a[k] != b[k] for k in same):
        raise ValueError(f"reports differ in {[k for k in same if a[k] != b[k]]}: "
                         f"{ {k: a[k] for k in same} } against { {k: b[k] for k in same} }")
    diff = np.subtract(a["semantic_per_prompt"], b["semantic_per_prompt"])
    return {"total": a["total"] - b["total"], "se": 50 * float(np.std(diff, ddof=1)) / np.sqrt(len(diff))}


TABLE_HEADER = ("| {label} | split | total | ± SE | semantic | colour | shape | motion | count | quality | FD | diversity |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|")
DIFFERENCE_HEADER = "| {label} | split | total difference | ± paired SE |\n|---|---|---|---|"


def table_row(label: str, r: dict) -> str:
    """One markdown row of an `evaluate` report, under TABLE_HEADER (the benches' tables)."""
    p, q = r["semantic_parts"], r["quality_parts"]
    div = "n/a" if r["diversity"] is None else f"{r['diversity']:.3f}"
    return (f"| {label} | {r['split']} | {r['total']:.2f} | {r['total_se']:.2f} | {100 * r['semantic']:.1f}% | "
            f"{100 * p['colour']:.1f}% | {100 * p['shape']:.1f}% | {100 * p['motion']:.1f}% | {100 * p['count']:.1f}% | "
            f"{r['quality']:.3f} | {q['fd']:.2f} | {div} |")


def difference_row(label: str, a: dict, b: dict) -> str:
    """One markdown row, under DIFFERENCE_HEADER, of report `a` minus report `b` (`paired_difference`)."""
    d = paired_difference(a, b)
    return f"| {label} | {a['split']} | {d['total']:+.2f} | {d['se']:.2f} |"


def model_source(engine, model: str, role: str, steps: int | None, guidance: float | None = None,
                 lora: str | None = None, lora_scale: float = 1.0) -> ClipSource:
    """A model, through the engine, as a clip source (deterministic per seed)."""
    from engine.events import Failed, Result
    from engine.requests import GenerateRequest

    def make(prompt: str, seed: int) -> np.ndarray:
        req = GenerateRequest(prompt=prompt, model=model, role=role, steps=steps, seed=seed,
                              guidance=guidance, lora=lora, lora_scale=lora_scale)
        for event in engine.generate(req):
            if isinstance(event, Failed):
                raise ValueError(event.message)
            if isinstance(event, Result):
                return event.value.frames
        raise RuntimeError("generation ended without a result")

    return make


READER_HEADER = ("| {label} | split | semantic | ± SE | colour | shape | motion | count | opposite direction |\n"
                 "|---|---|---|---|---|---|---|---|---|")
READER_DIFFERENCE_HEADER = "| {label} | split | semantic difference (points) | ± paired SE |\n|---|---|---|---|"


def reader_row(label: str, r: dict, reader: str) -> str:
    """One markdown row, under READER_HEADER, of a second reader's view of an `evaluate` report."""
    v = r["readers"][reader]
    p = v["semantic_parts"]
    return (f"| {label} | {r['split']} | {100 * v['semantic']:.1f}% | {100 * v['semantic_se']:.1f} | "
            f"{100 * p['colour']:.1f}% | {100 * p['shape']:.1f}% | {100 * p['motion']:.1f}% | {100 * p['count']:.1f}% | "
            f"{100 * v['opposite']:.1f}% |")


def reader_difference_row(label: str, a: dict, b: dict, reader: str) -> str:
    """One markdown row, under READER_DIFFERENCE_HEADER: report `a`'s semantic score minus `b`'s by
    `reader`, in points, with the paired SE over prompts."""
    same = ("split", "prompts", "seeds", "first")
    if any(a[k] != b[k] for k in same):
        raise ValueError(f"reports differ in {[k for k in same if a[k] != b[k]]}")
    diff = 100 * np.subtract(a["readers"][reader]["semantic_per_prompt"], b["readers"][reader]["semantic_per_prompt"])
    return f"| {label} | {a['split']} | {diff.mean():+.2f} | {float(np.std(diff, ddof=1)) / np.sqrt(len(diff)):.2f} |"


def add_row_arguments(ap) -> None:
    """The benches' shared flags: rows as LABEL=MODEL:ROLE:STEPS, prompts and seeds per split, splits."""
    ap.add_argument("--rows", nargs="+", default=["teacher 50 steps CFG=toyworld:teacher:50"])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--splits", default="public-eval,public-heldout")


def row_sources(engine, rows: list[str]) -> list[tuple[str, ClipSource]]:
    """(label, clip source) for each LABEL=MODEL:ROLE:STEPS row (a MODEL with a / is a folder)."""
    from pathlib import Path

    out = []
    for spec in rows:
        label, _, target = spec.rpartition("=")
        model, role, steps = target.rsplit(":", 2)
        out.append((label, model_source(engine, str(Path(model).expanduser()) if "/" in model else model,
                                        role, int(steps))))
    return out
