"""Reward tuning, one row per reward: does a short latent-reward LoRA tune move the true reward
on held-out prompts, at what cost in semantics and diversity, and how faithful is the LRM?

For each reward: the true (pixel) reward of final student samples on public-heldout prompts
and several seeds before and after the tune; MiniBench semantic accuracy and diversity before
and after (same prompts and seeds), by the MiniBench judge (which the `toyworld-semantic`
reward is made of) and by the independent reader (engine/toyworld/eval_reader.py, which no
training code imports); the LRM's Pearson r against the true reward on fresh held-out samples;
the tune's wall time. All in one run, side by side.

    python bench/reward.py --steps 300 [--rewards colourfulness,contrast] [--prompts 8 --seeds 2] [--lrm-replay 0]
                           [--reg base|vsd|none] [--reg-weight 1.0] [--lrm-members 1]
                           [--reward-scale 1.0] [--reward-norm 0|1] [--target-modules attn1.to_q,...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


from engine.events import Failed, Result
from engine.generate import Engine
from engine.requests import GenerateRequest
from engine.reward.spec import RewardSpec, scorer
from engine.toyworld import eval_reader, judge, minibench
from engine.toyworld.data import ToyworldData
from engine.toyworld.render import sample_clip
from engine.tune.adapter_io import save_adapter
from engine.tune.config import TuneConfig
from engine.tune.run import load_for_tune
from engine.tune.trainer import ADAPTER, train

DEFAULT_REWARDS = "colourfulness,brightness,contrast,sharpness,motion,smoothness,compressibility,toyworld-semantic"


def clips(engine, model, items, seeds, lora=None):
    """Final 4-step student samples per prompt and seed: (frames rows, latents [N, C, T, h, w])."""
    out, latents = [], []
    for spec, caption in items:
        row = []
        for seed in range(seeds):
            event = list(engine.generate(GenerateRequest(prompt=caption, model=model, role="student", steps=4,
                                                         seed=seed, lora=lora)))[-1]
            if isinstance(event, Failed):
                raise SystemExit(event.message)
            row.append(event.value.frames)
            latents.append(event.value.latents)
        out.append(row)
    return out, torch.cat(latents)


def summary(score, items, videos) -> dict:
    flat = [(c, v) for (spec, c), row in zip(items, videos) for v in row]
    true = score([v for _, v in flat], [c for c, _ in flat])
    div = np.mean([minibench.vendi_diversity(row) for row in videos]) if len(videos[0]) > 1 else float("nan")
    out = {"reward": float(np.mean(true)), "reward_std": float(np.std(true)), "diversity": float(div)}
    for key, reader in (("judge", judge.score), ("independent", eval_reader.score)):
        aspects = [{k: reader(v, spec)[k] for k in minibench.ASPECTS} for (spec, _), row in zip(items, videos) for v in row]
        per_clip = np.array([np.mean(list(a.values())) for a in aspects])
        out[key] = {"semantic": float(per_clip.mean()), "per_clip": per_clip,
                    "aspects": {k: float(np.mean([a[k] for a in aspects])) for k in minibench.ASPECTS}}
    return out


def semantic_change(before: dict, after: dict) -> str:
    """Paired change of one reader's semantic accuracy in points (same prompts and seeds) +- its
    standard error, and the aspect that fell most."""
    diff = 100 * (after["per_clip"] - before["per_clip"])
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    moved = {k: 100 * (after["aspects"][k] - before["aspects"][k]) for k in before["aspects"]}
    worst = min(moved, key=moved.get)
    return f"{diff.mean():+.1f} +- {se:.1f} ({worst} {moved[worst]:+.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--rewards", default=DEFAULT_REWARDS)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lrm-replay", type=int, default=None,
                    help="TuneConfig.lrm_replay (past samples the LRM refits on; 0 = current batch only)")
    ap.add_argument("--lrm-members", type=int, default=None, help="TuneConfig.lrm_members (LRM ensemble size)")
    ap.add_argument("--reg", default=None, help="TuneConfig.reg: base, vsd or none (default base)")
    ap.add_argument("--reg-weight", type=float, default=None, help="TuneConfig.reg_weight (default 1.0)")
    ap.add_argument("--reward-scale", type=float, default=None, help="TuneConfig.reward_scale (default 1.0)")
    ap.add_argument("--reward-norm", type=int, choices=[0, 1], default=None,
                    help="TuneConfig.reward_norm: 1 divides the LRM term by the reward's running sd")
    ap.add_argument("--target-modules", default=None,
                    help="TuneConfig.target_modules, comma-separated (default: self-attention and feed-forward, "
                         "engine.tune.config.SELF_ATTENTION_AND_FFN); to_q,to_k,to_v,to_out.0 was the default before")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine()
    items = [sample_clip("public-heldout", i) for i in range(args.prompts)]
    base_videos, base_latents = clips(engine, args.model, items, args.seeds)
    print(f"model {args.model}; {args.steps} tune steps; {args.prompts} public-heldout prompts x {args.seeds} seeds\n")
    print("| reward | before | after | change | change / sd | semantic before -> after (judge) | semantic change +- SE "
          "(aspect that fell most), judge | same, independent reader | diversity before -> after | LRM Pearson r | "
          "tune wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    prompts = ToyworldData().prompts("train")
    for name in args.rewards.split(","):
        score = scorer(RewardSpec(name))
        before = summary(score, items, base_videos)
        knobs = {"lrm_replay": args.lrm_replay, "lrm_members": args.lrm_members, "reg": args.reg, "reg_weight": args.reg_weight,
                 "reward_scale": args.reward_scale,
                 "reward_norm": None if args.reward_norm is None else bool(args.reward_norm),
                 "target_modules": args.target_modules and args.target_modules.split(",")}
        extra = {k: v for k, v in knobs.items() if v is not None}
        cfg = TuneConfig(model=args.model, reward=name, steps=args.steps, **extra)
        began = time.perf_counter()
        result = [e for e in train(cfg, load_for_tune(args.model), Path(tempfile.mkdtemp()), prompts, resume=False)][-1]
        wall = time.perf_counter() - began
        if not isinstance(result, Result):
            print(f"| {name} | tune failed: {result.message} |")
            continue
        tuner = result.value
        adapter = save_adapter(tuner.transformer, ADAPTER, cfg.rank, cfg.alpha, Path(tempfile.mkdtemp()) / "a", {})
        tuner.transformer.delete_adapters([ADAPTER])
        after_videos, after_latents = clips(engine, args.model, items, args.seeds, lora=str(adapter))
        after = summary(score, items, after_videos)
        # LRM fidelity: its prediction on the samples' latents vs the true reward of their clips (before and after)
        flat = [(c, v) for (_, c), row in zip(items * 2, base_videos + after_videos) for v in row]
        loaded = engine.model(args.model)
        with torch.no_grad():
            pred = tuner.lrm(torch.cat([base_latents, after_latents]), loaded.text.encode([c for c, _ in flat])).numpy()
        true = np.array(score([v for _, v in flat], [c for c, _ in flat]))
        r = float(np.corrcoef(pred, true)[0, 1]) if true.std() > 0 else float("nan")
        change = after["reward"] - before["reward"]
        print(f"| {name} | {before['reward']:.4f} | {after['reward']:.4f} | "
              f"{100 * change / max(abs(before['reward']), 1e-9):+.1f}% | {change / max(before['reward_std'], 1e-9):+.2f} | "
              f"{before['judge']['semantic']:.3f} -> {after['judge']['semantic']:.3f} | "
              f"{semantic_change(before['judge'], after['judge'])} | "
              f"{semantic_change(before['independent'], after['independent'])} | "
              f"{before['diversity']:.3f} -> {after['diversity']:.3f} "
              f"| {r:.3f} | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
