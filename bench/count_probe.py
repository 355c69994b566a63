"""How a model's clips get the object count wrong, by the independent reader.

MiniBench's count asks whether most frames show exactly the asked number of objects. This bench
says what the wrong frames show instead: more objects than asked (an object split in two, or a
spurious blob), fewer (objects merged or vanished), or both in one clip (flicker), broken down by
how many objects the prompt asks for. Reading frames with the evaluation reader
(engine/toyworld/eval_reader.py), which no training code imports.

    python bench/count_probe.py [--model toyworld] [--role teacher] [--steps 50] [--guidance G]
                                [--split public-eval] [--prompts 32] [--seeds 2]

`--model renderer` reads the renderer's own clips (the reader's floor); with `--latent-noise S`
they pass through the shipped VAE first, Gaussian noise of standard deviation S added to their
latents (is the decoder what draws the extra blobs?).
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import numpy as np

from engine.toyworld import eval_reader, minibench
from engine.toyworld.render import sample_clip


def classify(per_frame: list[int], asked: int) -> str:
    """right (>= the reader's share of frames exact), else more / fewer / flicker (both kinds)."""
    counts = np.asarray(per_frame)
    if np.mean(counts == asked) >= eval_reader.COUNT_FRAMES:
        return "right"
    more, fewer = int((counts > asked).sum()), int((counts < asked).sum())
    if more and fewer:
        return "flicker"
    return "more" if more else "fewer"


def _through_vae(source, noise: float):
    """The clips of `source` encoded by the shipped VAE, noised in latent space and decoded."""
    import torch

    from engine import loading, paths

    codec = loading.load(str(paths.TOYWORLD)).codec

    def make(caption: str, seed: int) -> np.ndarray:
        z = codec.encode(source(caption, seed)[None])
        g = torch.Generator().manual_seed(seed)
        return codec.decode(z + noise * torch.randn(z.shape, generator=g))[0]

    return make


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld", help="model name or folder; 'renderer' reads the renderer")
    ap.add_argument("--role", default="teacher")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--split", default="public-eval")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--latent-noise", type=float, default=None,
                    help="with --model renderer: through the VAE, this much noise added to the latents")
    args = ap.parse_args()
    if args.latent_noise is not None and args.model != "renderer":
        ap.error(f"--latent-noise reads renderer clips through the VAE; it needs --model renderer, got {args.model!r}")
    items = [sample_clip(args.split, i) for i in range(args.prompts)]
    if args.model == "renderer":
        source = minibench.renderer_source({caption: spec for spec, caption in items})
        if args.latent_noise is not None:
            source = _through_vae(source, args.latent_noise)
    else:
        from engine.generate import Engine
        source = minibench.model_source(Engine(), args.model, args.role, args.steps, args.guidance)
    kinds: dict[int, Counter] = defaultdict(Counter)
    frames_off: dict[int, list[float]] = defaultdict(list)  # mean |count - asked| over frames
    vanish = Counter()  # clips whose last frame shows fewer objects than the first
    for spec, caption in items:
        asked = len(spec.objects)
        for seed in range(args.seeds):
            _, per_frame = eval_reader.read(source(caption, seed))
            kinds[asked][classify(per_frame, asked)] += 1
            frames_off[asked].append(float(np.abs(np.asarray(per_frame) - asked).mean()))
            vanish[asked] += per_frame[-1] < per_frame[0]
    label = (f"renderer through the VAE, latent noise {args.latent_noise}" if args.latent_noise is not None else
             "renderer" if args.model == "renderer" else
             f"{args.model} {args.role} {args.steps or 'default'} steps CFG {args.guidance or 'default'}")
    print(f"{label}, {args.split}, {args.prompts} prompts x {args.seeds} seeds, read by the independent reader\n")
    print("| objects asked | clips | count right | more objects | fewer objects | flicker (both) "
          "| mean objects off per frame | fewer at the end than the start |")
    print("|---|---|---|---|---|---|---|---|")
    for asked in sorted(kinds) + ["all"]:
        k = sum(kinds.values(), Counter()) if asked == "all" else kinds[asked]
        off = [v for vs in frames_off.values() for v in vs] if asked == "all" else frames_off[asked]
        v = sum(vanish.values()) if asked == "all" else vanish[asked]
        n = sum(k.values())
        print(f"| {asked} | {n} | {k['right'] / n:.1%} | {k['more'] / n:.1%} | {k['fewer'] / n:.1%} | "
              f"{k['flicker'] / n:.1%} | {np.mean(off):.2f} | {v / n:.1%} |")


if __name__ == "__main__":
    main()
