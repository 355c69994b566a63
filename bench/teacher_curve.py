"""The teacher bake's curve as a markdown table, from `bake-state/teacher/curve.jsonl` while a bake runs
(the shipped v2 teacher's: docs/experiments/teacher-v2-curve.jsonl)
(one line per evaluation the bake made: MiniBench by the judge, 50 steps with CFG, on both splits).

    python bench/teacher_curve.py [--curve docs/experiments/teacher-v2-curve.jsonl]

A step evaluated twice (a bake resumed from a snapshot older than its last evaluation) shows its
newest line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


from engine.toyworld.bake import CURVE, TEACHER_STATE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--curve", default=str(TEACHER_STATE / CURVE))
    args = ap.parse_args()
    points = {}
    for line in Path(args.curve).read_text().splitlines():
        if line.strip():
            point = json.loads(line)
            points[point["step"]] = point
    print("| step | public-eval semantic | colour | shape | motion | count | opposite direction | "
          "public-heldout semantic | held-out motion | held-out opposite |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for step in sorted(points):
        p = points[step]
        print(f"| {step} | {100 * p['eval/semantic']:.1f}% | {100 * p['eval/colour']:.1f}% | "
              f"{100 * p['eval/shape']:.1f}% | {100 * p['eval/motion']:.1f}% | {100 * p['eval/count']:.1f}% | "
              f"{100 * p['eval/opposite']:.1f}% | {100 * p['heldout/semantic']:.1f}% | "
              f"{100 * p['heldout/motion']:.1f}% | {100 * p['heldout/opposite']:.1f}% |")
    if points:
        first = next(iter(points.values()))
        print(f"\n{first['prompts']} prompts x {first['seeds']} seeds per split at each step")


if __name__ == "__main__":
    main()
