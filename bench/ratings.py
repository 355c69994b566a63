"""Does a tune driven only by a user's ratings move clips toward what they liked?

A simulated user with a hidden taste rates clips the way the studio stores ratings; the tune
never sees the taste, only the ratings (reward "my ratings": an LRM fitted to them, then the
LoRA climbs it). Protocol, all in one run in a fresh RUSHES_HOME:

1. generate `--clips` student clips (4 steps) on train captions, logged like studio clips;
2. rate them: thumbs up when the hidden taste is above the median of the batch, thumbs down
   otherwise, plus `--pairs` A/B choices between random pairs (the higher taste wins);
3. tune with reward "ratings" for `--steps` LoRA updates;
4. on public-heldout captions x seeds (never rated), compare the student with and without the
   adapter: mean hidden taste, its change in units of the base clips' standard deviation, and
   the win rate (share of prompt/seed pairs whose tuned clip has the higher taste), and the
   MiniBench semantic accuracy (what the tune costs the prompt's content).

The default taste is warmth (mean red minus mean blue, per pixel, 0-255 scale); `--taste`
also takes any built-in reward name.

    python bench/ratings.py [--model toyworld] [--clips 30 --pairs 10] [--steps 150] [--taste warmth] [--target-modules attn1.to_q,...]
    python bench/ratings.py --prompts 24 --fit-only 'old={"views": 0}' 'default={}'   # the fit alone
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch



def warmth(frames: np.ndarray, prompt: str = "") -> float:
    f = frames.astype(np.float32)
    return float(f[..., 0].mean() - f[..., 2].mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--random", action="store_true", help="toyworld's architecture with random weights")
    ap.add_argument("--clips", type=int, default=30)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--taste", default="warmth")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--views", type=int, default=None, help="TuneConfig.ratings_views (denoised copies per rated clip)")
    ap.add_argument("--use-text", type=int, choices=[0, 1], default=1,
                    help="TuneConfig.ratings_text: 1 (default) conditions the ratings LRM on the prompt")
    ap.add_argument("--reward-scale", type=float, default=None, help="TuneConfig.reward_scale (default 1.0)")
    ap.add_argument("--reward-norm", type=int, choices=[0, 1], default=None,
                    help="TuneConfig.reward_norm: 1 divides the LRM term by the reward's running sd")
    ap.add_argument("--target-modules", default=None, help="TuneConfig.target_modules, comma-separated")
    ap.add_argument("--fit-only", nargs="+", default=None, metavar="LABEL=JSON",
                    help="no tune: fit the ratings LRM once per variant (fit_ratings_model kwargs, e.g. "
                         "'no views={\"views\": 0}') and print its held-out r against the hidden taste")
    args = ap.parse_args()
    os.environ["RUSHES_HOME"] = tempfile.mkdtemp()
    torch.set_num_threads(2)
    from engine import loading, paths
    from engine.events import Failed, Result
    from engine.requests import GenerateRequest
    from engine.reward import builtin
    from engine.toyworld.data import ToyworldData
    from engine.session import Session
    from engine.store import Store
    from engine.toyworld import judge
    from engine.toyworld.render import sample_clip
    from engine.tune.adapter_io import save_adapter
    from engine.tune.config import TuneConfig
    from engine.tune.trainer import ADAPTER, train

    model = args.model
    if args.random:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from speed import random_toyworld

        model = str(random_toyworld(Path(tempfile.mkdtemp())))
    taste = warmth if args.taste == "warmth" else builtin.get(args.taste)
    session = Session("bench-ratings")

    def make(prompt: str, seed: int, lora: str | None = None):
        req = GenerateRequest(prompt=prompt, model=model, role="student", steps=4, seed=seed, lora=lora)
        last = list(session.generate(req))[-1]
        if isinstance(last, Failed):
            raise SystemExit(last.message)
        assert isinstance(last, Result)
        return last.value

    rated = [make(sample_clip("train", 10_000 + i)[1], i) for i in range(args.clips)]
    values = np.array([taste(c.clip.frames, "") for c in rated])
    median = float(np.median(values))
    for saved, v in zip(rated, values):
        session.rate(saved.generation_id, "thumb", 1 if v > median else -1)
    rng = np.random.default_rng(0)
    for _ in range(args.pairs):
        a, b = rng.choice(len(rated), size=2, replace=False)
        win, lose = (a, b) if values[a] > values[b] else (b, a)
        session.rate(rated[win].generation_id, "pair", 1, rated[lose].generation_id)

    loaded = loading.load(model)
    held_specs = [sample_clip("public-heldout", i) for i in range(args.prompts)]
    held = [caption for _, caption in held_specs]
    if args.fit_only:
        fit_only(args, loaded, [[make(p, s).clip for s in range(args.seeds)] for p in held], held, taste)
        return
    knobs = {"ratings_views": args.views, "reward_scale": args.reward_scale,
             "reward_norm": None if args.reward_norm is None else bool(args.reward_norm),
             "target_modules": args.target_modules and args.target_modules.split(",")}
    knobs = {k: v for k, v in knobs.items() if v is not None}
    cfg = TuneConfig(model=model, reward="ratings", steps=args.steps, checkpoint_every=max(1, args.steps),
                     ratings_text=bool(args.use_text), **knobs)
    began = time.perf_counter()
    events = list(train(cfg, loaded, Path(tempfile.mkdtemp()), ToyworldData().prompts("train")))
    if not isinstance(events[-1], Result):
        raise SystemExit(f"tune failed: {events[-1]}")
    tuner = events[-1].value
    wall = time.perf_counter() - began
    adapter = save_adapter(tuner.transformer, ADAPTER, cfg.rank, cfg.alpha, Path(tempfile.mkdtemp()) / "adapter",
                           {"reward": "ratings"})
    base = [[make(p, s).clip for s in range(args.seeds)] for p in held]
    before = np.array([[taste(c.frames, "") for c in row] for row in base])
    with torch.no_grad():  # does the fitted taste carry to clips of prompts never rated?
        predicted = tuner.lrm(torch.cat([c.latents for row in base for c in row]),
                              loaded.text.encode([p for p in held for _ in range(args.seeds)])).numpy()
    held_r = float(np.corrcoef(predicted, before.ravel())[0, 1])
    tuned = [[make(p, s, str(adapter)).clip for s in range(args.seeds)] for p in held]
    after = np.array([[taste(c.frames, "") for c in row] for row in tuned])

    def semantic(rows) -> float:  # MiniBench's judge against each held-out prompt
        return float(np.mean([np.mean(list(judge.score(c.frames, spec).values()))
                              for (spec, _), row in zip(held_specs, rows) for c in row]))
    sd = float(before.std()) or 1.0
    store = Store(paths.database())
    n_ratings = store.rating_count()
    print(f"model {args.model if not args.random else 'toyworld architecture, random weights'}; taste {args.taste}; "
          f"{n_ratings} ratings ({args.clips} thumbs, {args.pairs} A/B) on {args.clips} clips; "
          f"{args.steps} tune steps; ratings LRM with {cfg.ratings_views} denoised views, "
          f"{'prompt-conditioned' if cfg.ratings_text else 'no text'}; held-out {args.prompts} prompts x {args.seeds} seeds\n")
    print("| measure | value |\n|---|---|")
    fit = tuner.ratings_fit
    print(f"| ratings LRM fit: thumbs correlation / A/B agreement | {fit['score_correlation']:.3f} / "
          f"{fit['pair_agreement'] if fit['pair_agreement'] is None else round(fit['pair_agreement'], 3)} |")
    print(f"| ratings LRM vs hidden taste on the held-out base clips (Pearson r) | {held_r:.3f} |")
    print(f"| hidden taste, student without -> with the adapter | {before.mean():.2f} -> {after.mean():.2f} |")
    print(f"| change in base-clip standard deviations | {(after.mean() - before.mean()) / sd:+.2f} sd |")
    diff = (after - before).ravel()
    print(f"| paired change in taste, mean +- standard error (t) | {diff.mean():+.2f} +- "
          f"{diff.std(ddof=1) / np.sqrt(diff.size):.2f} ({diff.mean() / (diff.std(ddof=1) / np.sqrt(diff.size)):+.1f}) |")
    wins, losses = int((after > before).sum()), int((after < before).sum())
    print(f"| win rate (tuned clip has the higher taste, same prompt and seed) | "
          f"{float(np.mean(after > before)):.0%} of {after.size} |")
    print(f"| sign test: wins / losses, two-sided p | {wins} / {losses}, p = {sign_test(wins, losses):.3f} |")
    print(f"| MiniBench semantic accuracy, without -> with the adapter | {semantic(base):.3f} -> {semantic(tuned):.3f} |")
    print(f"| tune wall time | {wall:.0f} s |")
    print(f"\nknobs: reward_scale {cfg.reward_scale}, reward_norm {cfg.reward_norm}, ratings_views {cfg.ratings_views}, "
          f"ratings_text {cfg.ratings_text}")


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial (p = 1/2) test of wins against losses, ties left out."""
    import math

    n = wins + losses
    tail = sum(math.comb(n, k) for k in range(max(wins, losses), n + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def fit_only(args, loaded, base, held: list[str], taste) -> None:
    """One ratings fit per variant on the stored ratings; held-out r against the hidden taste."""
    import json

    from engine import paths
    from engine.reward.ratings import fit_ratings_model
    from engine.store import Store

    truth = np.array([taste(c.frames, "") for row in base for c in row])
    latents = torch.cat([c.latents for row in base for c in row])
    text = loaded.text.encode([p for p in held for _ in range(args.seeds)])
    print(f"model {args.model}; taste {args.taste}; {args.clips} thumbs + {args.pairs} A/B; held-out "
          f"{args.prompts} prompts x {args.seeds} seeds\n")
    print("| fit variant (fit_ratings_model kwargs) | held-out r | thumbs r on the rated clips | fit s |\n|---|---|---|---|")
    for label, kwargs in [(v.split("=", 1)[0], json.loads(v.split("=", 1)[1])) for v in args.fit_only]:
        began = time.perf_counter()
        lrm, report = fit_ratings_model(Store(paths.database()), loaded, **kwargs)
        with torch.no_grad():
            r = float(np.corrcoef(lrm(latents, text).numpy(), truth)[0, 1])
        print(f"| {label} {json.dumps(kwargs)} | {r:.3f} | {report['score_correlation']:.3f} | "
              f"{time.perf_counter() - began:.0f} |", flush=True)


if __name__ == "__main__":
    main()
