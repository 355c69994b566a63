"""Where the two readers of toyworld clips disagree: the MiniBench judge (engine/toyworld/judge.py,
also what the students' rewards are made of) and the independent reader (engine/toyworld/eval_reader.py,
which no training code imports), on the same clips of each model.

    python bench/readers.py --rows "teacher=toyworld:teacher:50" "4-step=toyworld:student:4" [--prompts 32 --seeds 2]

For each row and split: each reader's score per aspect, and for each aspect how many clips' objects
only the judge reads right and how many only the independent reader does; then the share of the
asked directed motions (left/right, up/down, grow/shrink) each reads as the opposite motion.
"""

from __future__ import annotations

import argparse


from engine.generate import Engine
from engine.toyworld import eval_reader, judge, minibench
from engine.toyworld.render import sample_clip


def main() -> None:
    ap = argparse.ArgumentParser()
    minibench.add_row_arguments(ap)
    args = ap.parse_args()
    engine = Engine()
    print(f"{args.prompts} prompts x {args.seeds} seeds per split; per aspect: judge / independent reader "
          f"(objects only the judge reads right, only the reader does)\n")
    print("| model | split | colour | shape | motion | count | opposite direction, judge / reader |")
    print("|---|---|---|---|---|---|---|")
    for label, source in minibench.row_sources(engine, args.rows):
        for split in args.splits.split(","):
            sums = {k: [0.0, 0.0, 0.0, 0.0] for k in minibench.ASPECTS}  # judge, reader, judge only, reader only
            directed = opposite_judge = opposite_reader = 0
            clips = 0
            for i in range(args.prompts):
                clip_spec, caption = sample_clip(split, i)
                for seed in range(args.seeds):
                    frames = source(caption, seed)
                    a, b = judge.score(frames, clip_spec), eval_reader.score(frames, clip_spec)
                    for k in minibench.ASPECTS:
                        sums[k][0] += a[k]
                        sums[k][1] += b[k]
                        sums[k][2] += max(a[k] - b[k], 0)
                        sums[k][3] += max(b[k] - a[k], 0)
                    asked, opp = minibench.direction_reads(frames, clip_spec)
                    directed += asked
                    opposite_judge += opp
                    opposite_reader += b["opposite"]
                    clips += 1
            cells = [f"{100 * s[0] / clips:.1f}% / {100 * s[1] / clips:.1f}% ({s[2]:g}, {s[3]:g})"
                     for s in sums.values()]
            share = (f"{100 * opposite_judge / directed:.1f}% / {100 * opposite_reader / directed:.1f}% "
                     f"of {directed}" if directed else "n/a")
            print(f"| {label} | {split} | {' | '.join(cells)} | {share} |", flush=True)


if __name__ == "__main__":
    main()
