"""The DOLLAR table for toyworld: MiniBench on public-eval and public-heldout for the renderer
(upper bound), the teacher (50 steps, CFG), the distilled students and the ablation rows.

    python bench/dollar.py --rows "teacher=toyworld:teacher:50" \
        "DOLLAR 4-step=toyworld:student:4" "VSD 4-step=~/models/vsd:student:4" [--prompts 32 --seeds 2] \
        [--against teacher]

Each row is LABEL=MODEL:ROLE:STEPS; the renderer row is always first. Each clip is read twice:
by the MiniBench judge (the first table; the judge is also what the students' rewards are made
of) and by the independent reader (engine/toyworld/eval_reader.py, the second table), which no
training code imports. Speed ratios are bench/speed.py's job.
"""

from __future__ import annotations

import argparse


from engine.generate import Engine
from engine.toyworld import eval_reader, minibench

READER = "independent"


def main() -> None:
    ap = argparse.ArgumentParser()
    minibench.add_row_arguments(ap)
    ap.add_argument("--first", type=int, default=0,
                    help="index of the first prompt of each split (past the ones a choice was made on: a confirmation)")
    ap.add_argument("--against", default=None,
                    help="LABEL of a row: print every row's total minus its, with the paired SE")
    args = ap.parse_args()
    engine = Engine()
    rows = [("renderer (upper bound)", None), *minibench.row_sources(engine, args.rows)]
    print(f"MiniBench: {args.prompts} prompts (from #{args.first}) x {args.seeds} seeds per split\n")
    print(minibench.TABLE_HEADER.format(label="model"))
    if args.against is not None and args.against not in [label for label, _ in rows]:
        raise SystemExit(f"--against {args.against!r} names no row; rows: {[label for label, _ in rows]}")
    reports = {}
    for label, source in rows:
        for split in args.splits.split(","):
            r = reports[label, split] = minibench.evaluate(source, split, prompts=args.prompts, seeds=args.seeds,
                                                           first=args.first, readers={READER: eval_reader.score})
            print(minibench.table_row(label, r), flush=True)
    print("\nThe same clips by the independent reader (engine/toyworld/eval_reader.py)\n")
    print(minibench.READER_HEADER.format(label="model"))
    for (label, split), r in reports.items():
        print(minibench.reader_row(label, r, READER))
    if args.against is not None:
        print(f"\nAgainst {args.against} (same prompts and seeds; the SE is the paired one)\n")
        print(minibench.DIFFERENCE_HEADER.format(label="model"))
        for label, split in reports:
            if label != args.against:
                print(minibench.difference_row(label, reports[label, split], reports[args.against, split]))
        print("\nBy the independent reader\n")
        print(minibench.READER_DIFFERENCE_HEADER.format(label="model"))
        for label, split in reports:
            if label != args.against:
                print(minibench.reader_difference_row(label, reports[label, split], reports[args.against, split],
                                                      READER))


if __name__ == "__main__":
    main()
