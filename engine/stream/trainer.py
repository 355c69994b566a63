"""Distilling a causal student from a bidirectional teacher (docs/ARCHITECTURE.md §5.8).

The student starts as a copy of a bidirectional network (the model's few-step student, or the
teacher) run causally (engine/stream/causal.py) and learns in two phases, each update on
clips the student makes the way a stream makes them (engine/stream/rollout.py):

1. `ode`: CausVid's initialisation. Teacher ODE pairs (noise, the teacher's clip from it with
   CFG; engine/distill/regression.py) are made once; the student's rollout from a pair's noise
   regresses on the teacher's clip (L_reg).
2. `dmd`: Self-Forcing. Rollouts from fresh noise that fill the window once (or, with
   `rollout_chunks`, of a length drawn from the window's slots to it: past the window the cache
   rolls as a long stream's does) have their last window scored by DMD2's distribution matching against the teacher (engine/distill/dmd.py: the
   fake score tracks those windows, L_VSD pulls them toward the teacher's distribution). With a reward set, each rollout's term is weighted
   by Re-DMD's B * softmax(beta * r) (Reward Forcing; engine/distill/vsd.py). With
   `switch_share`, that share of rollouts changes prompt inside the scored window (the cache
   rebuilt under the new one, as a stream's is) and the window is scored under the new prompt,
   only the chunks made under it learning (LongLive trains on switches the same way).

Ground-truth long clips teach what a stream does after its first window, which the teacher,
trained on single clips, cannot say (engine/stream/continuation.py: the student's chunk fitted
given the clip's true past). `continuation_steps` runs that term alone between the two phases
(no teacher in the loop, so an update is cheap and thousands fit); `continuation_weight` adds it
to every update of the ODE and DMD phases.

The teacher scores whole windows bidirectionally; the fake score is a bidirectional copy of it.
The loop is engine/loop.py's; checkpoints hold the student, its EMA, the fake score and both
optimisers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine import checkpoint, loop, schedule
from engine.data import DataSource
from engine.distill import dmd
from engine.distill import regression as reg_mod
from engine.distill.trainer import Diverged  # one kind of non-finite update for every trainer
from engine.distill.vsd import reward_weights
from engine.events import Failed, Progress, Result
from engine.model import FlowModel
from engine.stream.causal import CausalWan
from engine.stream.config import CausalConfig
from engine.stream.continuation import continuation_loss
from engine.stream.rollout import rollout

if TYPE_CHECKING:
    from engine.loading import LoadedModel

PAIRS_FILE = "causal-pairs.safetensors"


class CausalTrainer:
    def __init__(self, cfg: CausalConfig, loaded: LoadedModel, work: Path, data: DataSource,
                 init_student: int | None = None, pairs_path: Path | None = None):
        self.cfg, self.loaded, self.work, self.data = cfg, loaded, work, data
        self.pairs_path = pairs_path or work / PAIRS_FILE
        torch.manual_seed(cfg.seed)
        self.teacher = loaded.teacher
        self.teacher.transformer.requires_grad_(False)
        start = loaded.teacher.transformer if init_student is None else loaded.student(init_student)[0].transformer
        self.network = copy.deepcopy(start).float().requires_grad_(True).train()
        self.ema = copy.deepcopy(start).float().requires_grad_(False).eval()
        fake = copy.deepcopy(loaded.teacher.transformer).float().requires_grad_(True).train()
        self.fake = FlowModel(fake)
        self.opt = torch.optim.AdamW(self.network.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.opt_fake = torch.optim.AdamW(fake.parameters(), lr=cfg.fake_lr, weight_decay=0.0)
        self.causal = CausalWan(self.network, cfg.window)
        self.timesteps = cfg.student_timesteps()
        self.sigmas = schedule.student_sigmas(self.timesteps, loaded.info.shift).tolist()
        c, _, h, w = loaded.codec.latent_shape(loaded.info.frames, loaded.info.height, loaded.info.width)
        self.latent_shape = (c, cfg.window.frames, h, w)  # a rollout fills the window once
        self.prompts = data.prompts("train")
        self.uncond = loaded.text.encode([""])
        self.reward = None
        if cfg.reward:
            from engine.reward import builtin
            self.reward = builtin.get(cfg.reward)
        self.long_pool = None
        if cfg.continuation_weight or cfg.continuation_steps:
            self.long_pool = self._long_pool(data)
        self.pairs: dict | None = None
        self.step = 0

    def _long_pool(self, data: DataSource):
        """The data source's clips as long as `continuation_chunks` chunks (its long clips)."""
        cfg, info, codec = self.cfg, self.loaded.info, self.loaded.codec
        latent_frames = cfg.continuation_chunks * cfg.chunk
        frames = next(f for f in range(1, 64 * latent_frames)
                      if codec.latent_shape(f, info.height, info.width)[1] >= latent_frames)
        pool = data.pool(codec, self.loaded.text, capacity=cfg.continuation_clips, seed=cfg.seed * 1000 + 7,
                         frames=frames, size=min(info.height, info.width)) if data.has_clips else None
        if pool is None:
            raise ValueError(f"the continuation term (continuation_weight {cfg.continuation_weight}, continuation_steps "
                             f"{cfg.continuation_steps}) needs real clips, and the data source {data.name!r} has none "
                             f"(give a folder of clips, or set both to 0)")
        return pool

    def fill_pool(self) -> None:
        """The long-clip pool as it was at `self.step` (the same clips a run without a break holds)."""
        cfg = self.cfg
        needed = cfg.continuation_weight or cfg.stage(self.step) in ("ode", "continuation")
        if self.long_pool is not None and needed:  # not for a run resumed past the phase that used it
            self.long_pool.fast_forward(cfg.continuation_clips + self._clips_added(self.step))

    def _clips_added(self, steps: int) -> int:
        """Long clips added to the pool over the first `steps` updates: one per update that fits the term."""
        cfg = self.cfg
        if cfg.continuation_weight:
            return steps
        return min(max(steps - cfg.ode_steps, 0), cfg.continuation_steps)

    # --- state -------------------------------------------------------------------------
    def state(self) -> dict:
        return {"student": self.network.state_dict(), "ema": self.ema.state_dict(),
                "fake": self.fake.transformer.state_dict(), "opt": self.opt.state_dict(),
                "opt_fake": self.opt_fake.state_dict()}

    def resume(self) -> bool:
        found = checkpoint.latest(self.work)
        if not found:
            return False
        self.step, state, _ = found
        self.network.load_state_dict(state["student"])
        self.ema.load_state_dict(state["ema"])
        self.fake.transformer.load_state_dict(state["fake"])
        self.opt.load_state_dict(state["opt"])
        self.opt_fake.load_state_dict(state["opt_fake"])
        return True

    def pair_settings(self) -> dict:
        cfg, info = self.cfg, self.loaded.info
        return {"count": cfg.pairs, "seed": cfg.seed, "shift": info.shift,
                "steps": cfg.pair_steps or info.teacher_steps,
                "guidance": info.guidance if cfg.pair_guidance is None else cfg.pair_guidance,
                "latent_shape": list(self.latent_shape)}

    def prepare_pairs(self) -> Iterator[Progress]:
        """Make the teacher ODE pairs of the regression phase, or load the run's saved ones."""
        settings = self.pair_settings()
        self.pairs = yield from reg_mod.load_or_make(
            self.pairs_path, settings, self.teacher, self.loaded.text,
            self.data.prompts("train", settings["count"], self.cfg.seed), self.cfg.seed)

    # --- one update ------------------------------------------------------------------------
    def _apply(self, loss: torch.Tensor, name: str, opt) -> None:
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise Diverged(f"{name} loss is {loss.item()}")
        loss.backward()
        opt.step()

    def _rewards(self, x: torch.Tensor, captions: list[str]) -> torch.Tensor:
        with torch.no_grad():
            frames = self.loaded.codec.decode(x.detach())
        values = [float(self.reward(f, c)) for f, c in zip(frames, captions)]
        if not all(np.isfinite(values)):
            raise Diverged(f"reward returned a non-finite value: {values}")
        return torch.tensor(values)

    def update(self) -> dict:
        cfg, b = self.cfg, self.cfg.batch
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        rng = np.random.default_rng([cfg.seed, self.step])
        exit_step = int(torch.randint(len(self.sigmas), (1,), generator=gen))
        stage = cfg.stage(self.step)
        alone = stage == "continuation"
        if alone:
            loss, logs = torch.zeros(()), {}
        elif stage == "ode":
            pick = torch.from_numpy(rng.choice(len(self.pairs["captions"]), size=b, replace=False))
            noise, text = self.pairs["noise"][pick], self.pairs["states"][pick].float()
            x = rollout(self.causal, noise, self.sigmas, text, exit_step, gen)
            loss, logs = reg_mod.regression_loss(x, self.pairs["target"][pick])
        else:
            captions = [self.prompts[i] for i in rng.integers(len(self.prompts), size=b)]
            text = self.loaded.text.encode(captions).float()
            window = cfg.window
            chunks = window.slots if not cfg.rollout_chunks else int(rng.integers(window.slots, cfg.rollout_chunks + 1))
            c, frames, h, w = self.latent_shape
            noise = torch.randn((b, c, chunks * window.chunk, h, w), generator=gen)
            switch, graded = None, window.slots
            if cfg.switch_share and rng.random() < cfg.switch_share:
                at = int(rng.integers(1, window.slots))  # the scored window's first chunk under the new prompt
                captions = [self.prompts[i] for i in rng.integers(len(self.prompts), size=b)]
                switch, graded = (chunks - window.slots + at, self.loaded.text.encode(captions).float()), window.slots - at
            x = rollout(self.causal, noise, self.sigmas, text, exit_step, gen, grad_chunks=graded, switch=switch)
            if switch is not None:
                text = switch[1]  # the window is scored under the prompt it switched to
            x = x[:, :, -frames:]  # the last window: what the teacher and the fake score judge
            shift = self.loaded.info.shift
            logs = dmd.fake_score_updates(self.fake, x, text, shift, cfg.fake_updates, gen,
                                          lambda loss: self._apply(loss, "fake", self.opt_fake))
            weights = None
            if self.reward is not None:
                rewards = self._rewards(x, captions)
                weights = reward_weights(rewards, cfg.reward_beta)
                logs["reward"] = rewards.mean().item()
            loss, vlogs = dmd.vsd_term(x, self.teacher, self.fake, text, self.uncond.expand(b, -1, -1),
                                       cfg.vsd_guidance, shift, gen, cfg.vsd_min_level, cfg.vsd_max_level,
                                       weights=weights)
            logs |= vlogs
        if alone or (self.long_pool is not None and cfg.continuation_weight):
            self.long_pool.add(1)
            clips, states, _ = self.long_pool.batch(b, rng)
            frames = cfg.continuation_chunks * cfg.chunk
            at = int(rng.integers(1, cfg.continuation_chunks))
            sigma = self.sigmas[int(rng.integers(len(self.sigmas)))]
            cont, clogs = continuation_loss(self.causal, clips[:, :, :frames], states.float(), at, sigma, gen)
            loss = loss + (1.0 if alone else cfg.continuation_weight) * cont
            logs |= clogs
        self._apply(loss, "student", self.opt)
        logs["student_loss"] = loss.item()
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.network.parameters()):
                e.lerp_(p, 1 - cfg.ema_decay)
        self.step += 1
        return logs


def train(cfg: CausalConfig, loaded: LoadedModel, work: Path, data: DataSource, init_student: int | None = None,
          resume: bool = True, should_stop: Callable[[], bool] = lambda: False,
          pairs_path: Path | None = None) -> Iterator:
    """Run (or continue) a causal distillation; yields Progress, then Result(trainer) or Failed.
    The teacher ODE pairs are kept at `pairs_path` (default: in `work`), made there if absent."""
    if not resume and (why := checkpoint.refuse_restart(work)):
        yield Failed(why)
        return
    trainer = CausalTrainer(cfg, loaded, work, data, init_student, pairs_path)
    if resume:
        trainer.resume()
    if trainer.step > cfg.steps:
        yield Failed(f"the run in {work} has already made {trainer.step} updates, more than the {cfg.steps} asked for")
        return
    trainer.fill_pool()
    if cfg.stage(trainer.step) == "ode":
        for event in trainer.prepare_pairs():
            if should_stop():
                yield Failed("cancelled", kind="cancelled")
                return
            yield event

    def save(done: int, logs: dict) -> bool:
        state = trainer.state()
        if not all(torch.isfinite(t).all() for t in state["student"].values()):
            return False
        checkpoint.save(work, done, state, logs)
        return True

    def step(i: int) -> dict:
        try:
            return trainer.update()
        except Diverged:
            trainer.step += 1
            raise

    def phase(done: int) -> loop.Phase:
        start = 0
        for stage, length in cfg.stages():
            if length and done <= start + length or stage == "dmd":
                return loop.Phase(stage, done - start, length)
            start += length

    for event in loop.run(step, start=trainer.step, total=cfg.steps, save=save, checkpoint_every=cfg.checkpoint_every,
                          phase=phase, should_stop=should_stop, skip=(Diverged,), max_skipped=cfg.max_nonfinite):
        yield event
        if isinstance(event, Failed):
            return
    yield Result(trainer)
