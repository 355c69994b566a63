"""Bake stage 2: the toyworld teacher, a tiny `WanTransformer3DModel` trained by flow matching.

~4.9 M parameters (4 blocks, width 256, 4 heads, FFN 1024, text_dim 384 for MiniLM states),
patch (1, 2, 2) over 16 x 17 x 8 x 8 latents = 272 tokens. Classifier-free guidance is learnt
by dropping 10 % of captions to the empty prompt. bf16 autocast with fp32 master weights on a
CPU that runs bf16 natively (about 1.7x faster per step than fp32 there), fp32 elsewhere
(`runtime.bf16_autocast`); the exported weights are an EMA.

The network also reads three position channels (`engine.model.with_positions`): with RoPE
alone it cannot tell the first frame from the last at pure noise (docs/experiments/teacher-v1.md, teacher).

`TeacherBakeConfig()` is the teacher v2 recipe: a fresh network with the position channels from
step 0, a curriculum (left/right clips only for the first 2000 steps, then the whole world, with a
warm restart at the switch) and the wider training vocabulary from the start. The shipped v1
teacher (`V1`) read a motion's axis but not its direction; the curriculum is what made a fresh
network read the direction word (docs/experiments/teacher-direction.md, "The curriculum teacher follows the direction
word").

A bake longer than a machine's life: every `snapshot_every` steps, and when asked to stop, the
bake writes the network and its EMA in bf16 (no optimizer state) to a snapshot folder meant to
be committed to git (`engine.checkpoint.save_snapshot`; the repository's `bake-state/teacher/`).
A resume starts from the newest of the local checkpoint (exact, with the optimizer) and that
snapshot (a fresh AdamW whose learning rate warms up again over `resume_warmup` steps).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

from engine import checkpoint, loop, paths
from engine.codec import VideoCodec
from engine.distill.flow_matching import flow_matching_loss, sample_levels
from engine.events import Failed, Progress
from engine.folder import ModelInfo, write_pipeline
from engine.model import CONTEXT_KEY, POSITION_KEY, FlowModel, add_noise, frame_context, position_channels, widen_inputs
from engine.runtime import bf16_autocast
from engine.schedule import warmup_cosine
from engine.textenc import TextEncoder, load_minilm
from engine.toyworld import world
from engine.toyworld.latents import LatentPool

TOYWORLD_INFO = ModelInfo(name="toyworld", shift=3.0, guidance=5.0, teacher_steps=50, frames=17,
                          height=64, width=64, max_frames=33, max_side=128, fps=8, text_max_length=32,
                          world="toyworld", vocabulary=world.vocabulary())


@dataclass(frozen=True)
class TeacherBakeConfig:
    steps: int = 40000  # optimizer steps in all (v2 shipped at 24000; the bake goes on from there)
    first_steps: int = 24000  # the cosine schedule of the steps before the first restart
    restarts: tuple[int, ...] = (2000, 24000)  # warm restarts: at each the LR warms up again and
    # decays to the next restart (the last one: to `steps`). 24000: where v2 shipped, its training
    # loss still falling (0.105 -> 0.083 over the last 10000 steps) and held-out semantic still rising
    position_channels: int = 3  # 0: RoPE only, as Wan; 3: frame time, row, column channels
    frame_context: int = 0  # latent frames on each side each frame also reads (engine.model.frame_neighbours;
    # 4 for 2500 steps from the shipped export left motion where a control segment had it, docs/experiments/teacher-direction.md);
    # a checkpoint or export without them is widened with zero weights on the new channels
    batch: int = 8  # clips per step
    new_clips_per_step: int = 2  # fresh renders encoded into the pool each step
    pool_capacity: int = 12000  # encoded clips kept for sampling
    lr: float = 3e-4  # peak learning rate
    min_lr: float = 3e-5
    warmup: int = 300
    caption_dropout: float = 0.1  # share of empty captions (teaches the unconditional branch)
    train_words_from: int | None = 0  # from this step on, new clips' captions also use
    # world.TRAIN_ONLY_WORDS (a wider vocabulary, so that held-out paraphrases are read by meaning)
    reversed_pairs: bool = False  # half of each batch is the other half played backwards, under the
    # reversed captions, at the same levels with time-flipped noise (an antithetic pair: only the
    # caption and the frame-time channel tell the two inputs' directions apart). Measured off: 2500
    # steps from the shipped export left motion where a control segment had it (docs/experiments/teacher-direction.md)
    motions: tuple[str, ...] | None = None  # train only on clips whose objects all move in these
    # ways (None: the whole world); a narrower world for diagnostics (bench/teacher_segment.py --motions)
    first_motions: tuple[str, ...] | None = ("left", "right")  # a curriculum: before step `first_motions_until`,
    # only clips that move in these ways, then `motions`. A fresh teacher given left/right for its
    # first 2000 steps reads the direction word on the whole world after; one given the whole world
    # from the start does not (docs/experiments/teacher-direction.md). Pair it with a warm restart at the switch (`restarts`)
    first_motions_until: int = 2000
    ema_decay: float = 0.999
    autocast_bf16: bool = True  # only where the CPU runs bf16 natively (runtime.bf16_autocast)
    checkpoint_every: int = 250
    export_every: int = 1000  # write the output pipeline folder with the current EMA weights
    snapshot_every: int = 1000  # write the committed-state snapshot (when the bake names a folder for it)
    eval_every: int = 2000  # score the export (when the bake passes an evaluator): the bake's curve
    resume_warmup: int = 100  # steps over which the LR warms up again after a resume from a snapshot
    seed: int = 0

    def __post_init__(self):
        if self.first_motions and self.first_motions_until <= 0:
            raise ValueError(f"first_motions {self.first_motions!r} needs first_motions_until > 0, "
                             f"got {self.first_motions_until}")


# How often a run reports, exports, snapshots and evaluates, and how long it goes on (a bake whose
# curve still rises is lengthened): not what a snapshot must agree on to be resumed.
_CADENCE = ("checkpoint_every", "export_every", "snapshot_every", "eval_every", "resume_warmup")
_LENGTH = ("steps", "first_steps", "restarts")


def recipe(cfg: TeacherBakeConfig) -> dict:
    """The fields that decide what a run trains (a snapshot resumes only the same recipe)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()
            if k not in _CADENCE + _LENGTH}


# The shipped v1 teacher (30500 steps): 12500 steps without position channels, then widened
# (`_load`) and continued with warm restarts at 12500 and 20500, the whole world from the start.
V1 = TeacherBakeConfig(steps=30500, first_steps=14000, restarts=(12500, 20500), train_words_from=None,
                       first_motions=None, first_motions_until=0)


def make_teacher(positions: int = 0, context: int = 0) -> WanTransformer3DModel:
    """The toyworld teacher's network; `positions` position channels (0 or 3) after the latents,
    then `context` neighbouring latent frames on each side."""
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=64,
        in_channels=16 + positions + 2 * context * 16, out_channels=16, text_dim=384, freq_dim=256,
        ffn_dim=1024, num_layers=4, rope_max_seq_len=64)
    if positions:
        model.register_to_config(**{POSITION_KEY: positions})
    if context:
        model.register_to_config(**{CONTEXT_KEY: context})
    return model


def _load(model: WanTransformer3DModel, state: dict) -> None:
    """Load weights into `model`, widening a state saved before position channels or frame
    context were added (zero weights on the new channels)."""
    have = state["patch_embedding.weight"].shape[1]
    if have < model.config.in_channels:
        saved_positions = have - 16  # 16 latent channels, then the positions
        if saved_positions not in (0, 3):
            raise ValueError(f"cannot widen a saved teacher reading {have} input channels to {model.config.in_channels}")
        narrow = make_teacher(saved_positions)
        narrow.load_state_dict(state)
        state = widen_inputs(narrow, position_channels(model) - saved_positions, frame_context(model)).state_dict()
    model.load_state_dict(state)


def _lr(cfg: TeacherBakeConfig, step: int, rewarm_from: int | None = None) -> float:
    """The schedule's LR at `step`; after a resume with a fresh optimizer at `rewarm_from`, ramped
    up linearly again over `resume_warmup` steps (AdamW's first steps without its moments are large)."""
    rewarm = 1.0 if rewarm_from is None else min(1.0, (step - rewarm_from + 1) / cfg.resume_warmup)
    begun = [r for r in cfg.restarts if r <= step]
    if not begun:
        return rewarm * warmup_cosine(step, cfg.first_steps, cfg.warmup, cfg.lr, cfg.min_lr)
    later = [r for r in cfg.restarts if r > step]
    end = later[0] if later else cfg.steps
    return rewarm * warmup_cosine(step - begun[-1], end - begun[-1], cfg.warmup, cfg.lr, cfg.min_lr)


def _motions(cfg: TeacherBakeConfig, step: int) -> tuple[str, ...] | None:
    """The motions the pool draws from at `step` (the curriculum's first world, then `motions`)."""
    return cfg.first_motions if cfg.first_motions and step < cfg.first_motions_until else cfg.motions


def _pool(cfg: TeacherBakeConfig, codec: VideoCodec, text: TextEncoder, step: int) -> LatentPool:
    """The latent pool as training reaches `step`: its world, and a warm start of the stream so far."""
    pool = LatentPool(codec, text, capacity=cfg.pool_capacity, seed=cfg.seed,
                      reversed_pairs=cfg.reversed_pairs, motions=_motions(cfg, step))
    pool.train_words = _train_words(cfg, step)
    pool.fast_forward(64 + step * cfg.new_clips_per_step, keep=1024)  # a warm pool, quickly
    return pool


def _train_words(cfg: TeacherBakeConfig, step: int) -> bool:
    return cfg.train_words_from is not None and step >= cfg.train_words_from


@torch.no_grad()
def _ema_update(ema, model, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


def _batch(cfg: TeacherBakeConfig, pool: LatentPool, step: int, gen: torch.Generator):
    """(x0, caption states, caption-dropout mask, levels, noise) for one step, drawn in the order the
    shipped teacher was trained with. With reversed pairs the second half is the first played
    backwards, at the same levels, with the first half's noise flipped in time."""
    rng = np.random.default_rng([cfg.seed, step])
    if cfg.reversed_pairs:
        x0, states = pool.pair_batch(cfg.batch, rng)
    else:
        x0, states, _ = pool.batch(cfg.batch, rng)
    drop = torch.rand(cfg.batch, generator=gen) < cfg.caption_dropout
    drawn = cfg.batch // 2 if cfg.reversed_pairs else cfg.batch
    sigma = sample_levels(drawn, TOYWORLD_INFO.shift, gen)
    eps = torch.randn(x0[:drawn].shape, generator=gen)  # [drawn, C, T, h, w]
    if cfg.reversed_pairs:
        sigma, eps = sigma.repeat(2), torch.cat([eps, eps.flip(2)])
    return x0, states, drop, sigma, eps


def load_vae(folder: Path = paths.TOYWORLD / "vae") -> AutoencoderKL:
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no baked VAE at {folder}; run `rushes bake toyworld --stage vae` first")
    return AutoencoderKL.from_pretrained(folder, use_safetensors=True).eval()


def _resume(cfg: TeacherBakeConfig, work: Path, out: Path, state: Path | None, model, ema, opt) -> tuple[int, int | None]:
    """Load the newest of: the local checkpoint under `work` (exact: the optimizer too), the
    snapshot in `state` (weights and EMA in bf16; a fresh optimizer), the export in `out` (EMA
    weights only, as the v1 bake resumed on a fresh machine). Returns (step to start at, the step
    from which the LR warms up again, or None for an exact resume)."""
    found = checkpoint.latest(work)
    local = found[0] if found else -1
    snap = checkpoint.snapshot_step(state) if state is not None else None
    exported = bake_record(out).get("teacher", {}).get("step") or -1
    if snap is not None and snap > local and snap >= exported:
        step, weights, info = checkpoint.load_snapshot(state)
        if info.get("recipe") != recipe(cfg):
            theirs, ours = info.get("recipe") or {}, recipe(cfg)
            differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
            raise ValueError(f"the snapshot in {state} (step {step}) was made by another recipe; it differs in "
                             f"{differ}: {[(k, theirs.get(k), ours.get(k)) for k in differ]}. Move it aside to "
                             f"start this recipe afresh")
        _load(model, weights["model"])
        _load(ema, weights["ema"])
        return step, step
    if found and local >= exported:
        _, saved, _ = found
        _load(model, saved["model"])
        _load(ema, saved["ema"])
        if saved["model"]["patch_embedding.weight"].shape == model.patch_embedding.weight.shape:
            opt.load_state_dict(saved["opt"])  # a widened network starts its optimizer afresh
        return local, None
    if exported > 0:  # warm-start from the export (EMA weights, no optimizer state)
        weights = WanTransformer3DModel.from_pretrained(out / "transformer", torch_dtype=torch.float32).state_dict()
        _load(model, weights)
        _load(ema, weights)
        return exported, None
    return 0, None


def snapshot(cfg: TeacherBakeConfig, state: Path, step: int, model, ema, loss: float | None) -> Path:
    """Write the committed-state snapshot: network and EMA in bf16, with the recipe and loss."""
    return checkpoint.save_snapshot(state, step, {"model": model.state_dict(), "ema": ema.state_dict()},
                                    {"recipe": recipe(cfg), "loss": loss,
                                     "schedule": {k: getattr(cfg, k) for k in _LENGTH}})


def train(cfg: TeacherBakeConfig, work: Path, out: Path, resume: bool = True, state: Path | None = None,
          stop: Callable[[], bool] | None = None,
          evaluate: Callable[[Path, int], dict[str, float]] | None = None) -> Iterator[Progress]:
    """Train or continue the teacher; checkpoints under `work`, exports pipelines to `out`, and
    (with `state`) snapshots to commit there, in the training-loop shell (engine/loop.py).
    `stop()` is asked before every step: when it says yes, the run checkpoints, snapshots and
    returns. `evaluate(out, step)` scores each
    `eval_every`-th export; its metrics come as a Progress of stage "teacher-eval"."""
    if not resume and state is not None and checkpoint.snapshot_step(state) is not None:
        raise FileExistsError(f"{state} holds a teacher snapshot at step {checkpoint.snapshot_step(state)}; "
                              f"resume it (--resume) or move it aside to start afresh")
    torch.manual_seed(cfg.seed)
    vae = load_vae(out / "vae")
    encoder, tokenizer = load_minilm()
    text = TextEncoder(encoder, tokenizer, max_length=TOYWORLD_INFO.text_max_length)
    model = make_teacher(cfg.position_channels, cfg.frame_context)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    start, rewarm_from = _resume(cfg, work, out, state, model, ema, opt) if resume else (0, None)
    flow = FlowModel(model)
    codec = VideoCodec(vae)
    pool = _pool(cfg, codec, text, start)
    empty = text.encode([""])[0]  # [L, D]
    loss_avg = None

    def step(i: int) -> dict:
        nonlocal pool, loss_avg
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)  # fixed per step: exact resume
        if _motions(cfg, i) != pool.motions:  # the curriculum widens the world: a new pool
            pool = _pool(cfg, codec, text, i)
        pool.train_words = _train_words(cfg, i)
        pool.add(cfg.new_clips_per_step)
        x0, states, drop, sigma, eps = _batch(cfg, pool, i, gen)
        states[drop] = empty
        x_t = add_noise(x0, eps, sigma)
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, i, rewarm_from)
        with bf16_autocast("cpu", cfg.autocast_bf16):
            v = flow.velocity(x_t, sigma, states)
        loss, _ = flow_matching_loss(v, x0, eps)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"teacher loss is {loss.item()} at step {i}; not saving")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        _ema_update(ema, model, min(cfg.ema_decay, (1 + i) / (10 + i)))
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        return {"loss": loss_avg}

    def save(done: int, metrics: dict) -> bool:
        checkpoint.save(work, done, {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict()},
                        metrics)
        return True

    def after(done: int, metrics: dict) -> Iterator[Progress]:
        if state is not None and (done % cfg.snapshot_every == 0 or done == cfg.steps):
            snapshot(cfg, state, done, model, ema, loss_avg)
        if done % cfg.export_every == 0 or done == cfg.steps:
            export(ema, vae, out, {"step": done, "loss": loss_avg, "of": cfg.steps})
        if evaluate is not None and (done % cfg.eval_every == 0 or done == cfg.steps):
            yield Progress(stage="teacher-eval", step=done, total=cfg.steps, metrics=evaluate(out, done))

    def on_stop(done: int) -> None:
        if state is not None:
            snapshot(cfg, state, done, model, ema, loss_avg)

    for event in loop.run(step, start=start, total=cfg.steps, save=save, checkpoint_every=cfg.checkpoint_every,
                          phase=loop.one_phase("teacher", cfg.steps), should_stop=stop or (lambda: False),
                          report_every=cfg.checkpoint_every, after=after, on_stop=on_stop):
        if isinstance(event, Failed):  # a stop: checkpointed and snapshotted; the caller sees the step reached
            return
        yield event


def export_latest(work: Path, out: Path, state: Path | None = None, cfg: TeacherBakeConfig = TeacherBakeConfig(),
                  vae_from: Path | None = None) -> Path:
    """Export the EMA teacher of the newest of the complete checkpoint under `work` and the
    snapshot in `state` into `out` (e.g. after stopping a bake early); the VAE comes from
    `vae_from` (default: `out`'s own)."""
    found = checkpoint.latest(work)
    snap = checkpoint.snapshot_step(state) if state is not None else None
    if snap is not None and (not found or snap > found[0]):
        step, weights, info = checkpoint.load_snapshot(state)
        ema_state = weights["ema"]
    elif found:
        step, saved, info = found
        ema_state = saved["ema"]
    else:
        raise FileNotFoundError(f"no complete teacher checkpoint under {work}"
                                + (f" and no snapshot in {state}" if state is not None else ""))
    teacher = make_teacher(cfg.position_channels, cfg.frame_context)
    _load(teacher, ema_state)
    return export(teacher, load_vae(vae_from or out / "vae"), out, {"step": step, "loss": info.get("loss"), "of": cfg.steps})


def bake_record(out: Path) -> dict:
    """What each stage has baked so far (`bake.json` beside the pipeline)."""
    path = out / "bake.json"
    return json.loads(path.read_text()) if path.exists() else {}


def export(teacher: WanTransformer3DModel, vae: AutoencoderKL, out: Path, record: dict) -> Path:
    """Write the toyworld pipeline folder with this teacher in bf16 (students come in stage 3)."""
    history = bake_record(out) | {"teacher": record}
    scheduler = FlowMatchEulerDiscreteScheduler(shift=TOYWORLD_INFO.shift)
    folder = write_pipeline(out, copy.deepcopy(teacher).to(torch.bfloat16), vae, scheduler, TOYWORLD_INFO)
    (folder / "bake.json").write_text(json.dumps(history, indent=2))
    return folder
