"""The DOLLAR distillation loop: model-agnostic, under accelerate (DDP/FSDP on N processes).

Per generator update (docs/ARCHITECTURE.md §5.3-5.5):
 1. generator input: backward simulation (the student runs k listed steps from noise under
    no_grad) or real latents noised to listed level k; with `w_reg`, the noise and captions are
    those of the run's teacher ODE pairs (engine/distill/regression.py);
 2. `fake_updates` fake-score updates: flow matching on the detached generator sample (one
    sample per update round, fresh noise and level each time, to save CPU time);
 3. the generator loss L = w_vsd L_VSD + w_cd L_CD + w_ft L_FT + w_reg L_reg + w_gan L_G (L_FT from update
    `lrm_warmup` on, once the LRM has fitted alone for a while; L_reg on updates whose generator
    input is the pair's noise itself, k = 0, which is every update of a 1-step student); the
    student's generator pass and its CD pass run as one batched forward (DDP allows one forward
    per backward); with `w_gan`, each fake-score update also trains DMD2's discriminator on
    noised real latents against the sample (engine/distill/gan.py); with `w_px`, + w_px L_px, a
    differentiable pixel reward of the decoded sample whose gradient goes through the VAE decoder
    (engine/reward/pixel.py; the LRM cannot learn a prompt-dependent reward at this budget);
 4. the latent reward model fits the pixel reward of decoded real and student latents;
 5. the EMA target follows the student.
The prompts and real clips come from the data source the caller passes (engine/data.py): the
toyworld bake passes the renderer's, `rushes distill --prompts FILE [--videos DIR]` the user's.
Without real clips the terms that need them (CD on noised real clips, the GAN's real side,
generator input "real") are refused, and the LRM fits the student's samples alone.
Checkpoints are atomic; a non-finite loss skips the step, `max_nonfinite` in a row stop the
run as diverged with nothing saved; `should_stop()` is checked between updates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from engine import checkpoint, loop, schedule
from engine.distill import cd as cd_mod
from engine.distill import dmd
from engine.distill import gan as gan_mod
from engine.distill import regression as reg_mod
from engine.distill.config import DistillConfig
from engine.distill.flow_matching import sample_levels
from engine.data import DataSource
from engine.events import Failed, Progress, Result
from engine.loading import LoadedModel
from engine.model import FlowModel, add_noise
from engine.reward import builtin
from engine.reward import pixel
from engine.reward.lrm import LatentRewardModel, lrm_fit_loss, reward_loss
from engine.runtime import bf16_autocast
from engine.sampling import backward_simulation, frame_shared_noise


class Diverged(Exception):
    pass


class DollarTrainer:
    def __init__(self, cfg: DistillConfig, loaded: LoadedModel, work: Path, data: DataSource,
                 accelerator: Accelerator | None = None):
        self.cfg, self.loaded, self.work, self.data = cfg, loaded, work, data
        self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.teacher = loaded.teacher
        self.teacher.transformer.requires_grad_(False)
        base = loaded.teacher.transformer
        start = base if cfg.init_student is None else loaded.student(cfg.init_student)[0].transformer
        student = copy.deepcopy(start).float().requires_grad_(True).train()
        fake = copy.deepcopy(base).requires_grad_(True).train()
        lrm = LatentRewardModel(loaded.codec.channels, cfg.lrm_width,
                                loaded.text.dim if cfg.lrm_text else None)
        self.ema = copy.deepcopy(start).float().requires_grad_(False).eval()
        opts = [torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
                for m, lr in ((student, cfg.lr), (fake, cfg.fake_lr), (lrm, cfg.lrm_lr))]
        student, fake, lrm, *opts = self.acc.prepare(student, fake, lrm, *opts)
        self.student_ddp, self.fake_ddp, self.lrm_ddp = student, fake, lrm
        self.opt_student, self.opt_fake, self.opt_lrm = opts
        self.disc_ddp = self.opt_disc = self.tap = None
        if cfg.use_gan:  # DMD2's discriminator: a head on the fake score's last block (engine/distill/gan.py)
            head = gan_mod.DiscriminatorHead(base.config.num_attention_heads * base.config.attention_head_dim)
            self.disc_ddp, self.opt_disc = self.acc.prepare(
                head, torch.optim.AdamW(head.parameters(), lr=cfg.fake_lr, weight_decay=0.0))
            self.tap = gan_mod.FeatureTap(self.acc.unwrap_model(fake))
        self.student = FlowModel(student, loaded.codec)
        self.fake = FlowModel(fake, loaded.codec)
        self.ema_model = FlowModel(self.ema, loaded.codec)
        self.reward = builtin.get(cfg.reward) if cfg.use_lrm else None
        self.px_reward = pixel.get(cfg.px_reward) if cfg.use_px else None
        if cfg.use_px:  # L_px's gradient passes through the decoder; it must not collect one
            loaded.codec.vae.requires_grad_(False)
        self.timesteps = cfg.student_timesteps()
        self.sigmas = schedule.student_sigmas(self.timesteps, loaded.info.shift).tolist()
        self.grid = schedule.teacher_sigmas(cfg.cd_grid, loaded.info.shift).tolist()
        rank = self.acc.process_index
        self.pool = data.pool(loaded.codec, loaded.text, capacity=cfg.pool_capacity,
                              seed=cfg.seed * 1000 + rank, frames=cfg.frames, size=cfg.size)
        if self.pool is None:
            check_data(cfg, data)
        self.train_prompts = data.prompts("train") if self.pool is None else []
        self.latent_shape = tuple(loaded.codec.latent_shape(cfg.frames, cfg.size, cfg.size))
        self.initial_clips = 4 * cfg.batch  # encoded before the first update
        self.uncond = loaded.text.encode([""])
        self.pairs: dict | None = None  # teacher ODE pairs, made or loaded by `prepare_pairs` when w_reg > 0
        self.step = 0

    # --- state -------------------------------------------------------------------------
    def state(self) -> dict:
        unwrap = self.acc.unwrap_model
        return {"student": unwrap(self.student_ddp).state_dict(), "fake": unwrap(self.fake_ddp).state_dict(),
                "lrm": unwrap(self.lrm_ddp).state_dict(), "ema": self.ema.state_dict(),
                "opt_student": self.opt_student.state_dict(), "opt_fake": self.opt_fake.state_dict(),
                "opt_lrm": self.opt_lrm.state_dict()} | ({} if self.disc_ddp is None else {
                "disc": unwrap(self.disc_ddp).state_dict(), "opt_disc": self.opt_disc.state_dict()})

    def resume(self) -> bool:
        found = checkpoint.latest(self.work)
        if not found:
            return False
        self.step, state, _ = found
        unwrap = self.acc.unwrap_model
        unwrap(self.student_ddp).load_state_dict(state["student"])
        unwrap(self.fake_ddp).load_state_dict(state["fake"])
        unwrap(self.lrm_ddp).load_state_dict(state["lrm"])
        self.ema.load_state_dict(state["ema"])
        self.opt_student.load_state_dict(state["opt_student"])
        self.opt_fake.load_state_dict(state["opt_fake"])
        self.opt_lrm.load_state_dict(state["opt_lrm"])
        if self.disc_ddp is not None:
            unwrap(self.disc_ddp).load_state_dict(state["disc"])
            self.opt_disc.load_state_dict(state["opt_disc"])
        return True

    def _amp(self):
        """bf16 autocast (fp32 master weights) where precision is not critical and the device runs
        bf16 natively (`runtime.bf16_autocast`). The VSD real and fake scores stay float32: their
        difference is the signal, and bf16 keeps ~3 digits."""
        return bf16_autocast(self.acc.device.type, self.cfg.autocast)

    def fill_pool(self) -> None:
        """The pool as it was at `self.step` (the same clips a run without a break would hold)."""
        if self.pool is not None:
            self.pool.fast_forward(self.initial_clips + self.step * self.cfg.new_clips_per_step)

    def pair_settings(self) -> dict:
        """What the run's teacher ODE pairs are made with (stored beside them, checked on load)."""
        cfg, info = self.cfg, self.loaded.info
        return {"count": cfg.reg_pairs, "seed": cfg.seed, "shift": info.shift,
                "steps": cfg.reg_steps or info.teacher_steps,
                "guidance": info.guidance if cfg.reg_guidance is None else cfg.reg_guidance,
                "latent_shape": list(self.latent_shape)}

    def prepare_pairs(self) -> Iterator[Progress]:
        """Make the teacher ODE pairs (main process, saved atomically) or load the run's saved ones;
        yields Progress per batch made; the captions are `reg_pairs` train prompts of the data source."""
        path, settings = self.work / reg_mod.PAIRS_FILE, self.pair_settings()
        if self.acc.is_main_process:
            self.pairs = yield from reg_mod.load_or_make(
                path, settings, self.teacher, self.loaded.text,
                self.data.prompts("train", settings["count"], self.cfg.seed), self.cfg.seed, amp=self._amp)
        self.acc.wait_for_everyone()
        if self.pairs is None:  # the other processes read what the main one saved
            self.pairs = reg_mod.load_pairs(path, settings)

    # --- pieces of one update ------------------------------------------------------------
    def _batch(self, rng: np.random.Generator):
        """(real latents or None, caption states [B, L, D], captions) of this update: a pool
        batch, or without real clips `batch` of the source's train prompts."""
        device = self.acc.device
        if self.pool is None:
            captions = [self.train_prompts[i] for i in rng.integers(len(self.train_prompts), size=self.cfg.batch)]
            return None, self.loaded.text.encode(captions).float().to(device), captions
        self.pool.add(self.cfg.new_clips_per_step)
        real, states, captions = self.pool.batch(self.cfg.batch, rng)
        return real.to(device), states.to(device), captions

    def _generator_input(self, real: torch.Tensor | None, text: torch.Tensor, gen: torch.Generator,
                         noise: torch.Tensor | None = None):
        """(x_t at listed level k, level s_k [B], k) for the generator's training pass; `noise`
        (the pairs') replaces a fresh draw; `real` is None without real clips."""
        b = text.shape[0]
        k = int(torch.randint(len(self.sigmas), (1,), generator=gen))  # same k on every rank
        if noise is None:
            noise = torch.randn((b, *self.latent_shape), generator=gen).to(self.acc.device)
        if self.cfg.generator_input == "real":
            x_t = add_noise(real, noise, self.sigmas[k])
        else:  # the student's own starting noise, as its sampler draws it
            noise = frame_shared_noise(noise, self.cfg.noise_frame_share, gen)
            x_t = backward_simulation(self.student, noise, self.sigmas, k, text, gen)
        return x_t, torch.full((b,), self.sigmas[k]), k

    def _pair_batch(self, b: int, rng: np.random.Generator):
        """(noise, caption states, captions, teacher targets) of b pairs drawn without replacement."""
        pick = rng.choice(len(self.pairs["captions"]), size=b, replace=False)
        take = torch.from_numpy(pick)
        device = self.acc.device
        return (self.pairs["noise"][take].to(device), self.pairs["states"][take].float().to(device),
                [self.pairs["captions"][i] for i in pick], self.pairs["target"][take].to(device))

    def _cd_pair(self, real, text, gen):
        """(x at s_{n+m}, s_{n+m} [B], f_ema target at s_n) on noised real latents."""
        b, m = real.shape[0], self.cfg.cd_m
        n = int(torch.randint(1, self.cfg.cd_grid - m + 1, (1,), generator=gen))  # grid index of s_n
        hi, lo = self.grid[self.cfg.cd_grid - n - m], self.grid[self.cfg.cd_grid - n]  # s_{n+m} > s_n
        noise = torch.randn(real.shape, generator=gen).to(real.device)
        x_hi = add_noise(real, noise, hi)
        segment = self.grid[self.cfg.cd_grid - n - m: self.cfg.cd_grid - n + 1]
        uncond = self.uncond.expand(b, -1, -1)
        with self._amp():
            x_lo = cd_mod.teacher_segment(self.teacher, x_hi, segment, text, uncond, self.cfg.cd_guidance).float()
        with torch.no_grad():
            s_lo = torch.full((b,), lo)
            target = cd_mod.consistency_fn(x_lo, self.ema_model.predict_x0(x_lo, s_lo, text), s_lo)
        return x_hi, torch.full((b,), hi), target

    def _apply(self, loss: torch.Tensor, name: str, *opts) -> None:
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise Diverged(f"{name} loss is {loss.item()}")
        self.acc.backward(loss)
        for opt in opts:
            opt.step()

    def _gan_generator_term(self, x: torch.Tensor, text: torch.Tensor, gen: torch.Generator):
        """L_G on the generator sample x (carrying its gradient), noised to a fresh level; the
        fake score and the head are frozen for this pass, so only x gets the gradient."""
        sigma = sample_levels(x.shape[0], self.loaded.info.shift, gen)
        noisy = add_noise(x, torch.randn(x.shape, generator=gen).to(x.device), sigma)
        fake, head = self.acc.unwrap_model(self.fake_ddp), self.acc.unwrap_model(self.disc_ddp)
        fake.requires_grad_(False)  # the unwrapped modules: no DDP reduction for this pass
        head.requires_grad_(False)
        with self._amp(), self.tap:
            FlowModel(fake).velocity(noisy, sigma, text)
            logits = head(self.tap.features)
        fake.requires_grad_(True)
        head.requires_grad_(True)
        return gan_mod.generator_loss(logits)

    def _pixel_rewards(self, latents: torch.Tensor, captions: list[str]) -> torch.Tensor:
        with self._amp():
            frames = self.loaded.codec.decode(latents)  # no grad: the reward need not be differentiable
        values = [float(self.reward(f, c)) for f, c in zip(frames, captions)]
        if not all(np.isfinite(values)):
            raise Diverged(f"reward returned a non-finite value: {values}")
        return torch.tensor(values, device=latents.device)

    # --- one update ------------------------------------------------------------------------
    def update(self) -> dict:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        rng = np.random.default_rng([cfg.seed, self.acc.process_index, self.step])
        real, text, captions = self._batch(rng)
        b = text.shape[0]
        uncond = self.uncond.expand(b, -1, -1)
        # the generator's own captions: the pool's, or the pairs' when it starts from their noise
        g_text, g_captions, noise, target = text, captions, None, None
        if cfg.use_reg:
            noise, g_text, g_captions, target = self._pair_batch(b, np.random.default_rng(
                [cfg.seed, self.acc.process_index, self.step, 1]))
        x_t, s_k, k = self._generator_input(real, g_text, gen, noise)
        if cfg.use_cd:  # one batched forward for the generator pass and the CD pass
            x_hi, s_hi, cd_target = self._cd_pair(real, text, gen)
            with self._amp():
                x0_all = self.student.predict_x0(torch.cat([x_t, x_hi]), torch.cat([s_k, s_hi]),
                                                 torch.cat([g_text, text]))
            x, x0_hi = x0_all[:b], x0_all[b:]
        else:
            with self._amp():
                x = self.student.predict_x0(x_t, s_k, g_text)
        shift = self.loaded.info.shift
        comparison, fake_opts = None, (self.opt_fake,)
        if cfg.use_gan:  # the discriminator trains inside the fake-score updates, on this update's real clips
            comparison = gan_mod.RealComparison(self.disc_ddp, self.tap, real, text, cfg.w_gan_d, cfg.gan_mismatch)
            fake_opts += (self.opt_disc,)
        logs = dmd.fake_score_updates(self.fake, x, g_text, shift, cfg.fake_updates, gen,
                                      lambda loss: self._apply(loss, "fake", *fake_opts), self._amp, comparison)
        loss, vlogs = dmd.vsd_term(x, self.teacher, self.fake, g_text, uncond, cfg.vsd_guidance, shift, gen,
                                   cfg.vsd_min_level, cfg.vsd_max_level)
        loss = cfg.w_vsd * loss
        logs |= vlogs
        if cfg.use_gan:
            l_g, glogs = self._gan_generator_term(x, g_text, gen)
            loss, logs = loss + cfg.w_gan * l_g, logs | glogs
        if cfg.use_reg and k == 0:  # x is the student's sample from the pair's own noise
            l_reg, rlogs = reg_mod.regression_loss(x, target)
            loss, logs = loss + cfg.w_reg * l_reg, logs | rlogs
        if cfg.use_cd:
            f_student = cd_mod.consistency_fn(x_hi, x0_hi, s_hi)
            l_cd, clogs = cd_mod.cd_loss(f_student, cd_target, cfg.cd_distance)
            loss, logs = loss + cfg.w_cd * l_cd, logs | clogs
        if cfg.use_lrm and self.step >= cfg.lrm_warmup:  # the LRM fits alone during its warm-up
            lrm_core = self.acc.unwrap_model(self.lrm_ddp).requires_grad_(False)
            l_ft, flogs = reward_loss(lrm_core(x, g_text))  # gradient reaches x through the LRM only
            lrm_core.requires_grad_(True)
            loss, logs = loss + cfg.w_ft * l_ft, logs | flogs
        if cfg.use_px:  # the gradient goes through the VAE decoder into x
            with self._amp():
                frames = self.loaded.codec.decode_float(x)
            l_px, plogs = pixel.pixel_reward_loss(self.px_reward(frames, g_captions))
            loss, logs = loss + cfg.w_px * l_px, logs | plogs
        self._apply(loss, "generator", self.opt_student)
        logs["generator_loss"] = loss.item()
        if cfg.use_lrm:  # on real and student latents, or the student's alone without real clips
            r = 0 if real is None else b
            both = x.detach() if real is None else torch.cat([real, x.detach()])
            targets = self._pixel_rewards(both, (captions if r else []) + g_captions)
            fit, llogs = lrm_fit_loss(self.lrm_ddp(both, g_text if real is None else torch.cat([text, g_text]),
                                                   each=True), targets)
            self._apply(fit, "lrm", self.opt_lrm)
            logs |= llogs | {"reward_student": targets[r:].mean().item()} | (
                {"reward_real": targets[:r].mean().item()} if r else {})
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.acc.unwrap_model(self.student_ddp).parameters()):
                e.lerp_(p, 1 - cfg.ema_decay)
        self.step += 1
        return logs


def check_data(cfg: DistillConfig, data: DataSource) -> None:
    """ValueError naming the settings on in `cfg` that draw on real clips when `data` has none."""
    needs = ([f"method {cfg.method!r} (consistency distillation noises real clips; --method vsd+lrm has no CD)"]
             if cfg.use_cd else []) + ([f"w_gan={cfg.w_gan} (the discriminator's real side)"] if cfg.use_gan else []
                                       ) + (["generator_input='real'"] if cfg.generator_input == "real" else [])
    if needs and not data.has_clips:
        raise ValueError(f"{'; '.join(needs)}: these need real clips, and data source {data.name!r} has none; "
                         f"give a folder of clips with captions (--videos DIR) or turn them off")


def train(cfg: DistillConfig, loaded: LoadedModel, work: Path, data: DataSource, resume: bool = True,
          should_stop: Callable[[], bool] = lambda: False,
          on_metrics: Callable[[int, dict], None] | None = None,
          accelerator: Accelerator | None = None) -> Iterator:
    """Run (or continue) a distillation; yields Progress, then Result(trainer) or Failed."""
    if not resume and (why := checkpoint.refuse_restart(work)):
        yield Failed(why)
        return
    trainer = DollarTrainer(cfg, loaded, work, data, accelerator)
    if resume:
        trainer.resume()
    if trainer.step > cfg.steps:  # the folder is shared by every step count: never export more than asked
        yield Failed(f"the run in {work} has already made {trainer.step} updates, more than the {cfg.steps} "
                     f"asked for; ask for {trainer.step} or more to continue it, or start afresh without resuming")
        return
    trainer.fill_pool()
    if cfg.use_reg:
        for event in trainer.prepare_pairs():
            if should_stop():
                yield Failed("cancelled", kind="cancelled")
                return
            yield event
    acc = trainer.acc

    def save(done: int, logs: dict) -> bool:
        """On the main process (the others wait for it): the checkpoint, unless the student went non-finite."""
        ok = True
        if acc.is_main_process:
            state = trainer.state()
            ok = all(torch.isfinite(t).all() for t in state["student"].values())
            if ok:
                checkpoint.save(work, done, state, logs)
        acc.wait_for_everyone()
        return ok

    def step(i: int) -> dict:
        try:
            logs = trainer.update()
        except Diverged:
            trainer.step += 1  # a skipped update still counts, as a run without a break would
            raise
        if on_metrics and acc.is_main_process:
            on_metrics(trainer.step, logs)
        return logs

    for event in loop.run(step, start=trainer.step, total=cfg.steps, save=save, checkpoint_every=cfg.checkpoint_every,
                          phase=loop.one_phase("distill", cfg.steps), should_stop=should_stop, skip=(Diverged,),
                          max_skipped=cfg.max_nonfinite):
        yield event
        if isinstance(event, Failed):
            return
    yield Result(trainer)
