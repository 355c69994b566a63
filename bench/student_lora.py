"""How small can a distilled student be stored? A full n-step student network against LoRAs of
several ranks extracted from it (engine.distill.extract) on the network it was distilled from:
size on disk, share of the weight change kept, and MiniBench on public-eval and public-heldout.

    python bench/student_lora.py --full DIR --steps 1 --base-steps 4 --ranks 16,32,64 [--prompts 16 --seeds 2]

DIR is a pipeline folder written by `rushes distill --init-student BASE` (the full network under
students/<steps>step, the starting network under students/<base>step).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path


from engine import loading
from engine.distill.export import add_student_lora
from engine.generate import Engine
from engine.toyworld import minibench


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", required=True, help="pipeline folder holding the full student network")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--base-steps", type=int, default=4)
    ap.add_argument("--ranks", default="16,32,64")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--splits", default="public-eval,public-heldout")
    args = ap.parse_args()
    full = Path(args.full).expanduser()
    network, timesteps = loading.load(str(full)).student(args.steps)
    rows = [(f"full network ({args.steps}-step)", str(full), _size_mb(full / "students" / f"{args.steps}step"), None)]
    scratch = Path(tempfile.mkdtemp(prefix="student-lora-"))
    for rank in (int(r) for r in args.ranks.split(",")):
        folder = scratch / f"rank{rank}"
        report = add_student_lora(full, network.transformer, args.steps, timesteps, args.base_steps, rank, folder)
        rows.append((f"LoRA rank {rank} on the {args.base_steps}-step network", str(folder),
                     _size_mb(folder / "students" / f"{args.steps}step-lora"), report))
    engine = Engine()
    print(f"MiniBench: {args.prompts} prompts x {args.seeds} seeds per split\n")
    print("| student | MB | Linear change kept | change left out | split | total | semantic | motion | diversity |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, folder, mb, report in rows:
        source = minibench.model_source(engine, folder, "student", args.steps)
        kept = "-" if report is None else f"{100 * report['linear_energy_kept']:.1f}%"
        left = "-" if report is None else f"{100 * report['change_left_out']:.1f}%"
        for split in args.splits.split(","):
            r = minibench.evaluate(source, split, prompts=args.prompts, seeds=args.seeds)
            div = "n/a" if r["diversity"] is None else f"{r['diversity']:.3f}"
            print(f"| {label} | {mb:.2f} | {kept} | {left} | {split} | {r['total']:.2f} | "
                  f"{100 * r['semantic']:.1f}% | {100 * r['semantic_parts']['motion']:.1f}% | {div} |", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
