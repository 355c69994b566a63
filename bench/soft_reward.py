"""The graded toyworld reward against the 0/1 judge on a model's clips: how many distinct values
each gives (what a latent reward model has to regress) and how closely they agree; with
`--judge-rev`, whether the judge's readings match those of the judge at a git revision.

    python bench/soft_reward.py [--role student --steps 1 --split train --prompts 24] \
        [--judge-rev eb30577]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from dataclasses import astuple
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from engine.generate import Engine
from engine.toyworld import judge, minibench, rewards
from engine.toyworld.render import sample_clip


def judge_at(rev: str):
    """engine/toyworld/judge.py as it was at git revision `rev`, imported as a module."""
    source = subprocess.run(["git", "show", f"{rev}:engine/toyworld/judge.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "judge_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("judge_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--role", default="student")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--splits", default="train")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--judge-rev", default=None, help="git revision whose judge the readings are compared with")
    args = ap.parse_args()
    source = minibench.model_source(Engine(), args.model, args.role, args.steps)
    old = judge_at(args.judge_rev) if args.judge_rev else None
    binary, soft, differ = [], [], 0
    for split in args.splits.split(","):
        for i in range(args.prompts):
            spec, caption = sample_clip(split, i)
            for seed in range(args.seeds):
                clip = source(caption, seed)
                binary.append(rewards.toyworld_semantic(clip, caption))
                soft.append(rewards.toyworld_soft(clip, caption))
                if old is not None:
                    differ += (old.score(clip, spec) != judge.score(clip, spec)
                               or [astuple(o) for o in old.read(clip)] != [astuple(o) for o in judge.read(clip)])
    binary, soft = np.array(binary), np.array(soft)
    print(f"{args.model} {args.role} {args.steps} steps, {args.splits}: {len(soft)} clips")
    print("| reward | mean | distinct values |\n|---|---|---|")
    print(f"| toyworld-semantic (0/1 judge) | {binary.mean():.3f} | {len(np.unique(binary.round(6)))} |")
    print(f"| toyworld-soft (graded) | {soft.mean():.3f} | {len(np.unique(soft.round(6)))} |")
    print(f"Pearson r between them: {np.corrcoef(binary, soft)[0, 1]:.3f}")
    if old is not None:
        print(f"clips the judge at {args.judge_rev} reads differently: {differ} of {len(soft)}")


if __name__ == "__main__":
    main()
