"""Where does the toyworld teacher lose the prompt? An SDEdit probe.

For the first `--prompts` clips of a split, the renderer's clip is encoded, noised to a start
level s0 (the Euler schedule's level nearest to it) and denoised by the teacher's 50-step
CFG schedule from there; the judge scores the result against the prompt. s0 = 1 is plain
text-to-video; s0 = 0 is the VAE round trip. The level where semantic accuracy falls tells
whether the teacher fails at laying out the clip (high noise) or at keeping objects
coherent while it refines them (low noise).

    python bench/teacher_probe.py [--model toyworld] [--levels 0,0.3,0.5,0.7,0.85,0.95,1] \
        [--split public-eval] [--prompts 16] [--guidance 5] [--guidance-levels 0,1]

`--drift` asks instead whether the teacher's one-pass x0 estimate at a level knows which way
a clip moves: for one-object train clips moving left or right, the horizontal drift of the
colour mass (last frame minus first, fraction of the width) in the decoded estimate from the
noised render (from pure noise at level 1), beside the renders' own drift.

    python bench/teacher_probe.py --drift [--levels 1,0.9,0.8] [--prompts 16] [--seeds 2]

`--confusion` tallies, for text-to-video clips of the first `--prompts` prompts of a split (seed
0, the model's default steps and guidance for `--role`, as MiniBench makes them), what the judge
reads for each prompted motion and shape ("-": no object of the prompted colour); how often the
prompted colour is found, by whether the caption used a held-out colour word; and, for the six
directed motions, how many found objects move the prompted way and how many the opposite way.

    python bench/teacher_probe.py --confusion [--role teacher] [--split public-eval] [--prompts 64]

`--swaps` asks which words of the caption the teacher's prediction uses at each level: the flow
loss on one-object train clips that move (left, right, up, down, grow, shrink) with the true
caption, and how much it rises when the motion phrase is swapped for the opposite direction's
("moving left" -> "moving right"), for another axis's ("moving left" -> "moving up"), or the colour
word for another colour's or for a synonym ("red" -> "crimson"); and the clip played backwards under
its own caption; first, how much each swap changes the text encoder's token states. The last column
is the time-flip equivariance gap |f(flip x) - flip f(x)| / |f(x)| of the x0 estimate (0: the
network cannot tell a clip from its reverse). `--transformer DIR` scores a bare transformer
folder (e.g. a scratch training run) in place of the model's. Then, for the first 16 clips, the
model's own sampler from one noise draw under the true and under the direction-swapped caption:
how often the judge reads the same motion off both (a network that follows the direction word
would answer opposite ones). `--motions` keeps only clips with those motions (a teacher trained on a
narrower world, bench/teacher_segment.py --from-scratch --motions).

    python bench/teacher_probe.py --swaps [--levels 1,0.97,0.9,0.7] [--prompts 48] [--seeds 3] [--motions left,right]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch


from engine import loading
from engine.sampling import run_to_end, teacher_sample
from engine.schedule import teacher_sigmas
from engine.toyworld import judge, world
from engine.toyworld.parse import mentions
from engine.toyworld.render import REVERSED_MOTION, render, sample_clip

DIRECTED = ("left", "right", "up", "down", "grow", "shrink")
OTHER_AXIS = {"left": "up", "up": "left", "right": "down", "down": "right", "grow": "left", "shrink": "right"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--levels", default="0,0.3,0.5,0.7,0.85,0.95,1")
    ap.add_argument("--split", default="public-eval")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--guidance-levels", default="0,1", help="lo,hi: CFG only at noise levels in [lo, hi]")
    ap.add_argument("--drift", action="store_true", help="the x0 estimate's direction of motion by level")
    ap.add_argument("--seeds", type=int, default=2, help="noise draws per level (--drift)")
    ap.add_argument("--confusion", action="store_true", help="what the judge reads for each prompted motion and shape")
    ap.add_argument("--role", default="teacher", help="the role whose clips --confusion reads")
    ap.add_argument("--swaps", action="store_true", help="which caption words the flow loss depends on, by level")
    ap.add_argument("--motions", default=",".join(DIRECTED), help="--swaps: only clips with these motions")
    ap.add_argument("--transformer", default=None, help="--swaps: a transformer folder scored in the model's place")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.confusion:
        confusion(args)
        return
    loaded = loading.load(str(Path(args.model).expanduser()) if "/" in args.model else args.model)
    if args.drift:
        drift(loaded, args)
        return
    if args.swaps:
        swaps(loaded, args)
        return
    info, model, codec = loaded.info, loaded.teacher, loaded.codec
    guidance = info.guidance if args.guidance is None else args.guidance
    levels = tuple(float(v) for v in args.guidance_levels.split(","))
    items = [sample_clip(args.split, i) for i in range(args.prompts)]
    videos = np.stack([render(spec) for spec, _ in items])
    x0 = codec.encode(videos)
    text = loaded.text.encode([caption for _, caption in items])
    uncond = loaded.text.encode([""] * len(items))
    sigmas = teacher_sigmas(args.steps, info.shift).float()
    print(f"SDEdit probe: {args.model} teacher, {args.steps}-step Euler CFG {guidance} at levels {levels}, "
          f"{args.prompts} {args.split} prompts, seed 0\n")
    print("| start level | steps run | semantic | colour | shape | motion | count |")
    print("|---|---|---|---|---|---|---|")
    for level in (float(v) for v in args.levels.split(",")):
        first = int(torch.argmin((sigmas - level).abs()))
        s0 = float(sigmas[first])
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        x = (1 - s0) * x0 + s0 * eps
        if first < args.steps:
            x = run_to_end(teacher_sample(model, x, sigmas[first:], text, uncond, guidance,
                                              guidance_levels=levels))
        frames = codec.decode(x)
        scores = [judge.score(clip, spec) for clip, (spec, _) in zip(frames, items)]
        parts = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        print(f"| {s0:.3f} | {args.steps - first} | {100 * np.mean(list(parts.values())):.1f}% | "
              + " | ".join(f"{100 * parts[k]:.1f}%" for k in ("colour", "shape", "motion", "count"))
              + " |", flush=True)


def _centroid_x(clip: np.ndarray, background: str) -> np.ndarray:
    """Per frame, the x of the colour mass that differs from the background (fraction of width)."""
    mass = np.abs(clip.astype(np.float32) - np.array(world.BACKGROUNDS[background], np.float32)).sum(-1)
    xs = np.arange(clip.shape[2]) + 0.5
    return (mass.sum(1) * xs).sum(-1) / np.maximum(mass.sum((1, 2)), 1e-6) / clip.shape[2]


def drift(loaded, args) -> None:
    info, model, codec = loaded.info, loaded.teacher, loaded.codec
    guidance = info.guidance if args.guidance is None else args.guidance
    items, index = [], 0
    while len(items) < args.prompts:
        spec, caption = sample_clip("train", index)
        index += 1
        if len(spec.objects) == 1 and spec.objects[0].motion in ("left", "right"):
            items.append((spec, caption))
    videos = np.stack([render(spec) for spec, _ in items])
    x0 = codec.encode(videos)
    text = loaded.text.encode([caption for _, caption in items])
    uncond = loaded.text.encode([""] * len(items))
    motions = [spec.objects[0].motion for spec, _ in items]

    def mean_drift(clips) -> dict[str, float]:
        d = [float(np.subtract(*_centroid_x(np.asarray(c), spec.background)[[-1, 0]])) for c, (spec, _) in zip(clips, items)]
        return {m: float(np.mean([v for v, mm in zip(d, motions) if mm == m])) for m in ("left", "right")}

    ref = mean_drift(codec.decode(x0))
    print(f"x0-estimate drift: {args.model} teacher, CFG {guidance}, {args.prompts} one-object train clips "
          f"({motions.count('left')} left, {motions.count('right')} right), {args.seeds} noise draws per level\n")
    print("| level | drift, 'left' clips | drift, 'right' clips |")
    print("|---|---|---|")
    print(f"| renders (VAE round trip) | {ref['left']:+.3f} | {ref['right']:+.3f} |")
    for level in (float(v) for v in args.levels.split(",")):
        got = {"left": [], "right": []}
        for seed in range(args.seeds):
            eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
            x = (1 - level) * x0 + level * eps
            est = model.predict_x0(x, torch.full((len(items),), level), text, uncond, guidance)
            for m, v in mean_drift(codec.decode(est)).items():
                got[m].append(v)
        print(f"| {level:.2f} | {np.mean(got['left']):+.3f} | {np.mean(got['right']):+.3f} |", flush=True)


def _phrase_swap(mapping: dict[str, str]):
    """A function rewording a caption: each seen motion phrase of motion m becomes the phrase at the
    same index for mapping[m] (the lists are parallel, world.MOTION_WORDS)."""
    table = {phrase: world.MOTION_WORDS[mapping[m]][0][i]
             for m, (seen, _) in world.MOTION_WORDS.items() if m in mapping for i, phrase in enumerate(seen)}
    pattern = re.compile("|".join(sorted(map(re.escape, table), key=len, reverse=True)))
    return lambda caption: pattern.sub(lambda m: table[m.group(0)], caption)


def _colour_swap(caption: str, colour: str, synonym: bool = False) -> str:
    """The caption with its colour word replaced by another colour's first word, or (`synonym`) by
    the other seen word for the same colour ("red" <-> "crimson")."""
    names, seen = list(world.COLOURS), world.COLOUR_WORDS[colour][0]
    word = next(w for w in seen if mentions(caption, w))
    other = next(w for w in seen if w != word) if synonym else \
        world.COLOUR_WORDS[names[(names.index(colour) + 3) % len(names)]][0][0]
    return re.sub(rf"\b{word}\b", other, caption)


def _moving_clips(count: int, motions: tuple[str, ...] = DIRECTED) -> tuple[list, dict[str, list[str]]]:
    """The first `count` one-object train clips with one of `motions`, and their captions: true,
    direction-swapped, axis-swapped and colour-swapped."""
    items, index = [], 0
    while len(items) < count:
        spec, caption = sample_clip("train", index)
        index += 1
        if len(spec.objects) == 1 and spec.objects[0].motion in motions:
            items.append((spec, caption))
    captions = [c for _, c in items]
    return items, {"true": captions, "direction": list(map(_phrase_swap(REVERSED_MOTION), captions)),
                   "axis": list(map(_phrase_swap(OTHER_AXIS), captions)),
                   "colour": [_colour_swap(c, spec.objects[0].colour) for spec, c in items],
                   "synonym": [_colour_swap(c, spec.objects[0].colour, synonym=True) for spec, c in items]}


def swaps(loaded, args) -> None:
    model, codec = loaded.teacher, loaded.codec
    if args.transformer:
        from diffusers import WanTransformer3DModel

        from engine.model import FlowModel

        model = FlowModel(WanTransformer3DModel.from_pretrained(args.transformer, torch_dtype=torch.float32))
    motions = tuple(args.motions.split(","))
    if set(motions) - set(DIRECTED):
        raise SystemExit(f"--motions takes some of {','.join(DIRECTED)}, got {args.motions!r}")
    items, texts = _moving_clips(args.prompts, motions)
    states = {k: loaded.text.encode(v) for k, v in texts.items()}
    x0 = codec.encode(np.stack([render(spec) for spec, _ in items]))
    n = len(items)
    print(f"Caption swaps: {args.transformer or args.model} teacher, {n} one-object moving train clips, "
          f"{args.seeds} noise draws per level\n")
    change = {k: float(np.mean([float((a - b).norm() / b.norm()) for a, b in zip(v, states["true"])]))
              for k, v in states.items() if k != "true"}
    print("text-encoder token states, mean relative change: "
          + ", ".join(f"{k} swapped {v:.3f}" for k, v in change.items()) + "\n")
    print("| level | flow loss, true caption | + direction swapped | + axis swapped | + colour swapped "
          "| + colour synonym | + clip played backwards | time-flip equivariance gap |")
    print("|---|---|---|---|---|---|---|---|")
    for level in (float(v) for v in args.levels.split(",")):
        sigma, loss, gap = torch.full((n,), level), {k: [] for k in (*states, "backwards")}, []

        def flow_loss(clean, eps, text) -> float:
            v = model.velocity((1 - level) * clean + level * eps, sigma, text)
            return float(((v - (eps - clean)) ** 2).mean())

        for seed in range(args.seeds):
            eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
            for name, text in states.items():
                loss[name].append(flow_loss(x0, eps, text))
            loss["backwards"].append(flow_loss(x0.flip(2), eps.flip(2), states["true"]))
            x_t = (1 - level) * x0 + level * eps
            est = model.predict_x0(x_t, sigma, states["true"])
            gap.append(float((est - model.predict_x0(x_t.flip(2), sigma, states["true"]).flip(2)).norm() / est.norm()))
        base = np.mean(loss["true"])
        rise = {k: np.mean(v) - base for k, v in loss.items()}
        print(f"| {level:.2f} | {base:.4f} | {rise['direction']:+.4f} | {rise['axis']:+.4f} | {rise['colour']:+.4f} "
              f"| {rise['synonym']:+.4f} | {rise['backwards']:+.4f} | {np.mean(gap):.3f} |", flush=True)
    _same_noise_readings(loaded, model, items[:16], states["true"][:16], states["direction"][:16])


def _same_noise_readings(loaded, model, items, true, swapped) -> None:
    """Sample each clip's caption and its direction-swapped one from the same noise; tally the readings."""
    info, codec, k = loaded.info, loaded.codec, len(items)
    sigmas = teacher_sigmas(info.teacher_steps, info.shift).float()
    noise = torch.randn((k, *codec.latent_shape(info.frames, info.height, info.width)),
                        generator=torch.Generator().manual_seed(0))
    uncond = loaded.text.encode([""] * k)
    read = {}
    for name, text in (("true", true), ("direction", swapped)):
        clips = codec.decode(run_to_end(teacher_sample(model, noise, sigmas, text, uncond, info.guidance)))
        read[name] = [{o.colour: o.motion for o in judge.read(c)}.get(spec.objects[0].colour, "-")
                      for c, (spec, _) in zip(clips, items)]
    same = sum(a == b for a, b in zip(read["true"], read["direction"]))
    right = sum(r == spec.objects[0].motion for r, (spec, _) in zip(read["true"], items))
    print(f"\nsame noise, true vs direction-swapped caption ({info.teacher_steps} steps, CFG {info.guidance}): "
          f"the judge reads the same motion off {same} of {k} pairs; the prompted one off {right} of {k} (true caption)")


def confusion(args) -> None:
    from engine.generate import Engine
    from engine.toyworld.minibench import model_source

    model = str(Path(args.model).expanduser()) if "/" in args.model else args.model
    source = model_source(Engine(), model, args.role, None)
    motions, shapes = Counter(), Counter()
    colour_by_word = {True: [], False: []}
    for i in range(args.prompts):
        spec, caption = sample_clip(args.split, i)
        readings = {o.colour: o for o in judge.read(source(caption, 0))}
        for obj in spec.objects:
            seen = readings.get(obj.colour)
            motions[obj.motion, seen.motion if seen else "-"] += 1
            shapes[obj.shape, seen.shape if seen else "-"] += 1
            held = any(mentions(caption, w) for w in world.COLOUR_WORDS[obj.colour][1])
            colour_by_word[held].append(seen is not None)
    print(f"What the judge reads: {args.model} {args.role}, {args.prompts} {args.split} prompts, seed 0\n")
    for name, table, keys in (("motion", motions, world.MOTIONS), ("shape", shapes, world.SHAPES)):
        columns = (*keys, "-")
        print(f"| prompted {name} \\ read | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for key in keys:
            print(f"| {key} | " + " | ".join(str(table[key, c]) for c in columns) + " |")
        print()
    for held, found in colour_by_word.items():
        if found:
            word = "held-out" if held else "seen"
            print(f"colour found, {word} colour word: {np.mean(found):.1%} of {len(found)} objects")
    found = sum(motions[m, r] for m in DIRECTED for r in world.MOTIONS)  # an object of the prompted colour
    right = sum(motions[m, m] for m in DIRECTED)
    opposite = sum(motions[m, REVERSED_MOTION[m]] for m in DIRECTED)
    print(f"directed motions ({', '.join(DIRECTED)}): {found} objects found, {right} read in the prompted "
          f"direction, {opposite} in the opposite one")


if __name__ == "__main__":
    main()
