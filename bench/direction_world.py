"""Can this teacher's architecture and loss learn a motion's direction at all? A fresh network on a
narrower world.

The shipped teacher reads a motion's axis and not its direction (docs/RESULTS.md, "The teacher does
not read the direction word"), and three changes from its export left that as it was. This trains
a *fresh* teacher (the bake's network, optimiser and schedule: warm-up, then one cosine) on a world
whose objects only move in `--motions` (default left and right, so the direction is all a motion
phrase says), into a scratch copy of assets/toyworld. If it learns to follow the direction word
there, the architecture can, and the full teacher's failure is one of priority in training; if it
cannot, the tokens or their positions are the obstacle. Checkpoints go to `OUT-checkpoints`; run
it again to continue from the newest. Then score it with

    python bench/teacher_probe.py --swaps --model OUT --motions left,right --prompts 48 --seeds 3

    python bench/direction_world.py --out DIR [--steps 3000] [--motions left,right] [--frame-context K]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import paths  # noqa: E402
from engine.toyworld import teacher_bake  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="scratch pipeline folder (made from assets/toyworld)")
    ap.add_argument("--steps", type=int, default=3000, help="optimizer steps from a fresh network")
    ap.add_argument("--motions", default="left,right", help="the only motions the clips have")
    ap.add_argument("--frame-context", type=int, default=0,
                    help="each latent frame also reads K frames on each side (TeacherBakeConfig.frame_context)")
    args = ap.parse_args()
    out = Path(args.out).expanduser()
    if not out.exists():
        shutil.copytree(paths.TOYWORLD, out)
        record = teacher_bake.bake_record(out)
        record.pop("teacher", None)  # no teacher record: train() starts from a fresh network
        (out / "bake.json").write_text(json.dumps(record, indent=2))
    cfg = dataclasses.replace(teacher_bake.TeacherBakeConfig(), steps=args.steps, first_steps=args.steps,
                              restarts=(), motions=tuple(args.motions.split(",")),
                              frame_context=args.frame_context)
    began = time.perf_counter()
    work = out.with_name(out.name + "-checkpoints")
    for event in teacher_bake.train(cfg, work, out, resume=True):
        print(f"step {event.step} loss {event.metrics['loss']:.4f} {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
