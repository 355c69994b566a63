""""My ratings" as a reward: a latent reward model fitted to the user's own ratings of clips.

Thumbs (-1 / +1) and stars (1..5, mapped to [-1, 1]) are regressed with MSE; pairwise choices
use the Bradley-Terry likelihood, -log sigmoid(r_winner - r_loser) (Bradley & Terry 1952; as
in RLHF reward models). Clips are read back from their mp4 files and encoded to latents, so
the fitted model scores latents directly and a tune can follow it with no pixel reward at all.

Twenty to forty ratings are very little data, so the fit is built to generalise to prompts the
user never rated (`python bench/ratings.py` measures it):
- the prompt input (`use_text`) and the width are knobs (`python bench/ratings.py --fit-only`
  compares fit variants by held-out r);
- the tuner climbs the LRM on the student's x0 predictions from every listed level, which are
  blurrier than finished clips; with `views` the fit also sees each rated clip re-noised to the
  student's listed levels below pure noise and denoised by the student in one step, with the
  clip's rating (a rating of the clip holds for its denoised views); each fit step sees the
  clips and one set of views, in turn.
  With the views the tune moved a held-out taste further with semantics held (docs/experiments/reward-tuning.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engine import schedule
from engine.export import read_mp4
from engine.model import add_noise
from engine.reward.lrm import LatentRewardModel
from engine.store import Store

MIN_RATINGS = 4


def _score(kind: str, value: float) -> float:
    return float(value) if kind == "thumb" else (float(value) - 3.0) / 2.0


def rating_data(store: Store, model_name: str | None = None):
    """(clips {generation_id: (path, prompt)}, scored [(id, target)], pairs [(winner, loser)])."""
    clips, scored, pairs = {}, [], []
    for r in store.ratings():
        ids = [r["generation_id"]] + ([r["other_id"]] if r["kind"] == "pair" else [])
        rows = [store.generation(i) for i in ids]
        if any(row is None or not row["path"] or not Path(row["path"]).exists() for row in rows):
            continue
        if model_name and any(row["model"] != model_name for row in rows):
            continue
        for row in rows:
            clips[row["id"]] = (row["path"], row["prompt"], json.loads(row["settings"]))
        if r["kind"] == "pair":
            pairs.append((r["generation_id"], r["other_id"]))
        else:
            scored.append((r["generation_id"], _score(r["kind"], r["value"])))
    return clips, scored, pairs


def denoised_views(loaded, latents: torch.Tensor, text: torch.Tensor, student_steps: int, views: int,
                   generator: torch.Generator) -> list[torch.Tensor]:
    """`views` copies of latents [N, C, T, h, w], each noised to one of the student's listed
    levels below pure noise (in turn) and denoised by the student's one x0 prediction."""
    if views < 1 or student_steps not in loaded.students:
        return []
    flow, timesteps = loaded.student(student_steps)
    levels = [s for s in schedule.student_sigmas(timesteps, loaded.info.shift).tolist() if s < 1.0]
    out = []
    with torch.no_grad():
        for v in range(views if levels else 0):
            s = levels[v % len(levels)]
            noisy = add_noise(latents, torch.randn(latents.shape, generator=generator).to(latents.device), s)
            out.append(flow.predict_x0(noisy, torch.full((len(latents),), s, device=latents.device), text))
    return out


def fit_ratings_model(store: Store, loaded, steps: int = 300, lr: float = 1e-3, seed: int = 0,
                      student_steps: int = 4, views: int = 3, use_text: bool = True,
                      width: int = 128) -> tuple[LatentRewardModel, dict]:
    """Fit an LRM to the stored ratings of this model's clips; ValueError when there are too few.
    `views`: denoised copies of each clip by the `student_steps` student (module docstring);
    `use_text`: condition the LRM on the prompt."""
    clips, scored, pairs = rating_data(store, loaded.info.name)
    if len(scored) + len(pairs) < MIN_RATINGS:
        raise ValueError(f"'my ratings' needs at least {MIN_RATINGS} ratings of {loaded.info.name} clips, "
                         f"found {len(scored) + len(pairs)}; rate clips in the Create tab first")
    ids = sorted(clips)
    index = {gid: i for i, gid in enumerate(ids)}
    frames = [read_mp4(clips[g][0]) for g in ids]
    latents = torch.cat([loaded.codec.encode(f[None]) for f in frames])  # [N, C, T, h, w]
    text = loaded.text.encode([clips[g][1] for g in ids])
    torch.manual_seed(seed)
    views_ = denoised_views(loaded, latents, text, student_steps, views, torch.Generator().manual_seed(seed))
    lrm = LatentRewardModel(loaded.codec.channels, width, loaded.text.dim if use_text else None).to(latents.device)
    opt = torch.optim.AdamW(lrm.parameters(), lr=lr, weight_decay=1e-4)
    s_idx = torch.tensor([index[g] for g, _ in scored], dtype=torch.long)
    s_val = torch.tensor([v for _, v in scored], device=latents.device)
    w_idx = torch.tensor([index[a] for a, _ in pairs], dtype=torch.long)
    l_idx = torch.tensor([index[b] for _, b in pairs], dtype=torch.long)
    shown = 2 if views_ else 1  # each step: the clips and one of their views, in turn
    all_text = text.repeat(shown, 1, 1) if use_text else None
    for step in range(steps):
        inputs = torch.cat([latents, views_[step % len(views_)]]) if views_ else latents
        r = lrm(inputs, all_text, each=True).view(-1, shown, len(ids))  # [members, clips | view, N]
        loss = torch.zeros((), device=latents.device)
        if len(scored):
            loss = loss + torch.mean((r[:, :, s_idx] - s_val) ** 2)
        if len(pairs):
            loss = loss - torch.nn.functional.logsigmoid(r[:, :, w_idx] - r[:, :, l_idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        r = lrm(latents, text if use_text else None).cpu()
        agree = [float(r[index[a]] > r[index[b]]) for a, b in pairs]
        corr = float(np.corrcoef(r[s_idx].numpy(), s_val.cpu().numpy())[0, 1]) if len(scored) > 2 else None
    lrm.requires_grad_(False).eval()
    return lrm, {"clips": len(ids), "scored": len(scored), "pairs": len(pairs), "fit_loss": loss.item(),
                 "views": len(views_), "use_text": use_text,
                 "pair_agreement": float(np.mean(agree)) if agree else None, "score_correlation": corr}
