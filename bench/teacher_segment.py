"""A training segment of the toyworld teacher in a scratch folder; by default, one more warm
restart from the shipped export.

What the teacher stage of the bake would do with a longer schedule (a warm restart at the shipped
step, then `--steps` more), but into `--out` (a copy of assets/toyworld), so that a recipe change
can be tried and scored beside the shipped teacher without touching assets/. Checkpoints go to
`OUT-checkpoints`; run it again to continue from the newest. Score the result with

    python bench/dollar.py --rows "LABEL=OUT:teacher:50" --prompts 32 --seeds 2

    python bench/teacher_segment.py --out DIR [--steps 2500] [--train-words] [--reversed-pairs] [--frame-context K]

`--from-scratch` trains a fresh network instead (the bake's network, optimiser and schedule:
warm-up, then one cosine over `--steps`), and `--motions` keeps only clips whose objects move
in those ways. Together they ask whether this architecture and loss can learn a motion's
direction at all: the shipped teacher reads a motion's axis and not its direction
(docs/experiments/teacher-direction.md), and on a left/right-only world the direction is all a motion phrase says.
Score that with `python bench/teacher_probe.py --swaps --model OUT --motions left,right`.

    python bench/teacher_segment.py --out DIR --from-scratch --steps 3000 [--motions left,right] [--train-words]

A curriculum in one run: `--first-motions left,right --first-until N --restart-at N` trains on
left/right clips to step N, then on the whole world with the LR warmed up again
(`TeacherBakeConfig.first_motions`). By hand, as first measured (docs/experiments/teacher-direction.md): train on
`--motions left,right`, copy OUT and OUT-checkpoints, then run the copy without `--motions`,
`--steps M --restart-at N`.

    python bench/teacher_segment.py --out DIR --from-scratch --steps 30500 --first-motions left,right --first-until 2000 --restart-at 2000 --train-words
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path


from engine import paths
from engine.toyworld import teacher_bake


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="scratch pipeline folder (made from assets/toyworld)")
    ap.add_argument("--steps", type=int, default=2500, help="optimizer steps after the shipped export")
    ap.add_argument("--train-words", action="store_true", help="captions also use world.TRAIN_ONLY_WORDS")
    ap.add_argument("--reversed-pairs", action="store_true",
                    help="half of each batch is the other half played backwards (TeacherBakeConfig.reversed_pairs)")
    ap.add_argument("--frame-context", type=int, default=0,
                    help="each latent frame also reads K frames on each side (TeacherBakeConfig.frame_context)")
    ap.add_argument("--from-scratch", action="store_true", help="a fresh network, --steps in all, one cosine")
    ap.add_argument("--motions", default=None, help="only clips with these motions, e.g. left,right")
    ap.add_argument("--first-motions", default=None,
                    help="with --from-scratch: a curriculum, only these motions (e.g. left,right) before --first-until")
    ap.add_argument("--first-until", type=int, default=0, help="the step where --first-motions ends")
    ap.add_argument("--restart-at", type=int, default=None,
                    help="with --from-scratch: a warm restart at this step (warm-up, then one cosine to --steps), "
                         "e.g. where a curriculum widens the world")
    args = ap.parse_args()
    if not args.from_scratch and (args.restart_at is not None or args.first_motions):
        ap.error("--restart-at and --first-motions need --from-scratch")
    if args.first_motions and args.first_until <= 0:
        ap.error(f"--first-motions needs --first-until N > 0, got {args.first_until}")
    out = Path(args.out).expanduser()
    if not out.exists():
        shutil.copytree(paths.TOYWORLD, out)
        if args.from_scratch:  # without a teacher record, train() starts from a fresh network
            record = teacher_bake.bake_record(out)
            record.pop("teacher", None)
            (out / "bake.json").write_text(json.dumps(record, indent=2))
    base = teacher_bake.TeacherBakeConfig()
    motions = tuple(args.motions.split(",")) if args.motions else None
    if args.from_scratch:
        if args.restart_at is not None and not 0 < args.restart_at < args.steps:
            ap.error(f"--restart-at {args.restart_at} must lie between 0 and --steps {args.steps}")
        restarts = () if args.restart_at is None else (args.restart_at,)
        cfg = dataclasses.replace(base, steps=args.steps, first_steps=args.steps, restarts=restarts,
                                  train_words_from=0 if args.train_words else None)
    else:
        shipped = teacher_bake.bake_record(paths.TOYWORLD)["teacher"]["step"]
        cfg = dataclasses.replace(base, steps=shipped + args.steps, restarts=(*base.restarts, shipped),
                                  train_words_from=shipped if args.train_words else None)
    first = tuple(args.first_motions.split(",")) if args.first_motions else None
    cfg = dataclasses.replace(cfg, reversed_pairs=args.reversed_pairs, frame_context=args.frame_context,
                              motions=motions, first_motions=first, first_motions_until=args.first_until)
    began = time.perf_counter()
    work = out.with_name(out.name + "-checkpoints")
    for event in teacher_bake.train(cfg, work, out, resume=True):
        print(f"step {event.step} loss {event.metrics['loss']:.4f} {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
