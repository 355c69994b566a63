"""How faithful can the latent reward model be under a tune's budget? An offline fit.

The tuner fits its LRM online: 300 updates of 4 fresh samples (the student's x0 prediction
from a random listed level, as `Tuner._inputs` makes them), one pass, AdamW at lr 1e-3. This
bench replays that budget offline on samples of the frozen student (no LoRA moving under it),
then scores the LRM on final 4-step samples of public-heldout prompts: Pearson r between its
prediction and the true pixel reward. It separates what the LRM architecture can learn from
what a moving generator does to it during a tune (bench/reward.py measures the two together).

    python bench/lrm.py [--rewards colourfulness,motion] [--updates 300] [--batch 4] \
        [--variants "default={}" "ensemble 3={\"members\": 3}"]

Besides the built-in rewards, `aspect:colour` (shape, motion, count) is one graded aspect of the
judge (`judge.soft_score`) against the caption: can the LRM learn what the prompt asks for?
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


from engine import schedule
from engine.reward.lrm import LatentRewardModel, lrm_fit_loss
from engine.reward.spec import RewardSpec, scorer
from engine.sampling import backward_simulation, run_to_end, student_sample
from engine.toyworld.render import sample_clip
from engine.tune.run import load_for_tune
from engine.toyworld.data import ToyworldData

DEFAULT_REWARDS = "colourfulness,brightness,sharpness,motion,smoothness,compressibility,toyworld-semantic"


def _student(loaded):
    flow, timesteps = loaded.student(4)
    shape = loaded.codec.latent_shape(loaded.info.frames, loaded.info.height, loaded.info.width)
    return flow, schedule.student_sigmas(timesteps, loaded.info.shift).tolist(), shape


@torch.no_grad()
def tune_inputs(loaded, prompts: list[str], seed: int, chunk: int = 16) -> torch.Tensor:
    """x0 predictions from a random listed level after backward simulation (the tuner's inputs)."""
    flow, sigmas, shape = _student(loaded)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(prompts), chunk):
        text = loaded.text.encode(prompts[i:i + chunk])
        b = text.shape[0]
        k = int(torch.randint(len(sigmas), (1,), generator=gen))
        x = backward_simulation(flow, torch.randn((b, *shape), generator=gen), sigmas, k, text, gen)
        out.append(flow.predict_x0(x, torch.full((b,), sigmas[k]), text))
    return torch.cat(out)


@torch.no_grad()
def final_samples(loaded, prompts: list[str], seeds: int) -> tuple[torch.Tensor, list[str]]:
    """Final 4-step student latents (the engine's sampler), one per prompt and seed."""
    flow, sigmas, shape = _student(loaded)
    text = loaded.text.encode(prompts)
    out = []
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(1000 + seed)
        noise = torch.randn((len(prompts), *shape), generator=gen)
        out.append(run_to_end(student_sample(flow, noise, torch.tensor(sigmas), text, gen)))
    return torch.cat(out), prompts * seeds


def decode_all(loaded, latents: torch.Tensor, chunk: int = 16) -> list[np.ndarray]:
    return [clip for i in range(0, len(latents), chunk) for clip in loaded.codec.decode(latents[i:i + chunk])]


def fit(variant: dict, loaded, x, text, r, updates: int, batch: int, seed: int = 0) -> LatentRewardModel:
    torch.manual_seed(seed)
    lrm = LatentRewardModel(loaded.codec.channels, 128, loaded.text.dim, **variant)
    opt = torch.optim.AdamW(lrm.parameters(), lr=1e-3)
    for u in range(updates):
        idx = slice(u * batch, (u + 1) * batch)
        loss, _ = lrm_fit_loss(lrm(x[idx], text[idx], each=True), r[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return lrm.eval()


def aspect_scorer(aspect: str):
    """A batch scorer of one graded judge aspect against each clip's caption (0 when it names no object)."""
    from engine.toyworld.rewards import caption_spec
    from engine.toyworld import judge

    def one(frames: np.ndarray, caption: str) -> float:
        spec = caption_spec(caption)
        return 0.0 if spec is None else judge.soft_score(frames, spec)[aspect]

    return lambda clips, captions: [one(f, c) for f, c in zip(clips, captions)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--rewards", default=DEFAULT_REWARDS)
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--test-prompts", type=int, default=32)
    ap.add_argument("--test-seeds", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["default={}"],
                    help='LABEL=JSON keyword arguments of LatentRewardModel, e.g. "ensemble={\\"members\\": 3}"')
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    variants = [(v.split("=", 1)[0], json.loads(v.split("=", 1)[1])) for v in args.variants]
    loaded = load_for_tune(args.model)
    n = args.updates * args.batch
    rng = np.random.default_rng(0)
    pool = ToyworldData().prompts("train")
    train_prompts = [pool[i] for i in rng.integers(len(pool), size=n)]
    began = time.perf_counter()
    x_train = tune_inputs(loaded, train_prompts, seed=0)
    test_items = [sample_clip("public-heldout", i)[1] for i in range(args.test_prompts)]
    x_test, test_prompts = final_samples(loaded, test_items, args.test_seeds)
    with torch.no_grad():
        t_train, t_test = loaded.text.encode(train_prompts), loaded.text.encode(test_prompts)
    v_train, v_test = decode_all(loaded, x_train), decode_all(loaded, x_test)
    print(f"{n} training samples ({args.updates} updates x {args.batch}, one pass), {len(v_test)} test samples "
          f"(final 4-step, {args.test_prompts} public-heldout prompts x {args.test_seeds} seeds); "
          f"data {time.perf_counter() - began:.0f} s\n")
    print("| reward | " + " | ".join(f"{label} r" for label, _ in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for name in args.rewards.split(","):
        score = aspect_scorer(name.split(":", 1)[1]) if name.startswith("aspect:") else scorer(RewardSpec(name))
        r_train = torch.tensor(score(v_train, train_prompts), dtype=torch.float32)
        r_test = np.array(score(v_test, test_prompts), dtype=np.float64)
        cells = []
        for _, variant in variants:
            lrm = fit(variant, loaded, x_train, t_train, r_train, args.updates, args.batch)
            with torch.no_grad():
                pred = lrm(x_test, t_test).numpy()
            cells.append(f"{np.corrcoef(pred, r_test)[0, 1]:.3f}" if r_test.std() > 0 else "n/a")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
