"""Latent-reward LoRA tuning of a few-step student (docs/ARCHITECTURE.md §5.6; DOLLAR §3.3).

Per update: prompts -> the student (LoRA on TuneConfig.target_modules) makes latents x by
backward simulation (k listed steps under no_grad, the next with grad); the pixel reward of
decode(x) (no grad: any reward works, differentiable or not) trains the latent reward model,
each update on the current batch, optionally plus `lrm_replay_batch` samples replayed from the
last `lrm_replay` (off by default: it measured worse; no extra decode or reward call);
after `lrm_warmup` updates (the warm-up: `train` counts them apart from the `steps` generator
updates) the LoRA minimises

    L = -reward_scale * mean R_lrm(x) + reg_weight * regulariser

where, with `reward_norm`, the LRM term is divided by the running standard deviation of the
reward over the tune's samples so far (Welford), so `reward_scale` counts in the reward's own
spread and one setting means the same push for rewards of any range;
with regulariser "base": mean (x - x_base)^2, x_base the frozen student's prediction from the
same input (adapter disabled), so the reward is reached without drifting off the student's
distribution; or "vsd": the DMD2 variational score distillation term (engine/distill/vsd.py)
against the teacher with CFG, with a fake score (initialised from the teacher) tracking the
tuned student by `fake_updates` flow-matching updates per LoRA update (DOLLAR eq. 5's L_VSD
kept during reward tuning, so the samples stay on the teacher's distribution). A reward that fails
(raises, NaN, wrong type) skips the update: no optimizer step is taken on a bad reward.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from engine import checkpoint, loop, schedule
from engine.distill import dmd
from engine.events import Failed, Result
from engine.loading import LoadedModel
from engine.model import FlowModel
from engine.reward.custom import RewardError
from engine.reward.lrm import LatentRewardModel, lrm_fit_loss, reward_loss
from engine.reward.spec import scorer
from engine.sampling import backward_simulation, frame_shared_noise
from engine.tune.config import TuneConfig

ADAPTER = "tune"


def check_target_modules(transformer: torch.nn.Module, targets: list[str], model: str) -> None:
    """Every target must name Linear layers the way peft matches them (the full name or a dotted suffix)."""
    linears = [name.removesuffix(".base_layer") for name, module in transformer.named_modules()
               if isinstance(module, torch.nn.Linear)]  # a layer peft has wrapped keeps its Linear as base_layer
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in linears)]
    if missing:
        suffixes = sorted({n.split(".", 2)[-1] for n in linears if n.startswith("blocks.0.")}) or linears[:12]
        raise ValueError(f"target_modules {missing} match no Linear layer of {model}'s student; "
                         f"its blocks have {', '.join(suffixes)}")


class Tuner:
    def __init__(self, cfg: TuneConfig, loaded: LoadedModel, work: Path, prompts: list[str] = ()):
        """`prompts`: what the tune draws from when `cfg.prompts` is empty (the caller's data
        source's train split, engine/data.py)."""
        self.cfg, self.loaded, self.work = cfg, loaded, work
        self.prompts = list(cfg.prompts) or list(prompts)
        if not self.prompts:
            raise ValueError("the tune has no prompts: give some (--prompts FILE or the settings' prompts) "
                             "or tune a model whose world has its own (rushes.json 'world')")
        torch.manual_seed(cfg.seed)
        self.student_steps = cfg.student_steps or loaded.default_student_steps()
        flow, self.timesteps = loaded.student(self.student_steps)
        self.transformer = flow.transformer
        self.transformer.requires_grad_(False)
        if ADAPTER in getattr(self.transformer, "peft_config", {}):
            self.transformer.delete_adapters([ADAPTER])
        check_target_modules(self.transformer, cfg.target_modules, cfg.model)
        self.transformer.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=True,
                                                target_modules=list(cfg.target_modules)), adapter_name=ADAPTER)
        self.transformer.set_adapter(ADAPTER)
        self.flow = FlowModel(self.transformer, loaded.codec)
        self.device = self.flow.device  # where the model was loaded (TuneConfig.device)
        self.lora_params = [p for p in self.transformer.parameters() if p.requires_grad]
        self.spec = cfg.reward_spec()
        self.ratings_fit = None
        if cfg.reward == "ratings":  # the LRM is the user's taste, fitted once and kept frozen
            from engine import paths
            from engine.reward.ratings import fit_ratings_model
            from engine.store import Store

            self.lrm, self.ratings_fit = fit_ratings_model(Store(paths.database()), loaded, seed=cfg.seed,
                                                           student_steps=self.student_steps,
                                                           views=cfg.ratings_views, use_text=cfg.ratings_text)
            self.score = None
        else:
            self.lrm = LatentRewardModel(loaded.codec.channels, 128, loaded.text.dim,
                                         members=cfg.lrm_members).to(self.device)
            self.score = scorer(self.spec)
        self.fake = self.opt_fake = None
        if cfg.reg == "vsd":
            self.teacher = loaded.teacher
            self.teacher.transformer.requires_grad_(False)
            fake = copy.deepcopy(self.teacher.transformer).float().requires_grad_(True).train()
            self.fake = FlowModel(fake, loaded.codec)
            self.opt_fake = torch.optim.AdamW(fake.parameters(), lr=cfg.fake_lr, weight_decay=0.0)
            self.uncond = loaded.text.encode([""])
        self.opt = torch.optim.AdamW(self.lora_params, lr=cfg.lr, weight_decay=0.0)
        self.opt_lrm = torch.optim.AdamW(self.lrm.parameters(), lr=cfg.lrm_lr)
        self.sigmas = schedule.student_sigmas(self.timesteps, loaded.info.shift).tolist()
        info = loaded.info
        self.latent_shape = loaded.codec.latent_shape(info.frames, info.height, info.width)
        self.replay = {"x": torch.zeros((cfg.lrm_replay, *self.latent_shape), dtype=torch.float16),
                       "prompt": torch.zeros(cfg.lrm_replay, dtype=torch.int64),
                       "reward": torch.zeros(cfg.lrm_replay), "count": torch.zeros(1, dtype=torch.int64)}
        self.reward_stats = torch.zeros(3, dtype=torch.float64)  # count, mean, sum of squared deviations
        self.step = 0

    def state(self) -> dict:
        state = {"lora": get_peft_model_state_dict(self.transformer, adapter_name=ADAPTER),
                 "lrm": self.lrm.state_dict(), "opt": self.opt.state_dict(), "opt_lrm": self.opt_lrm.state_dict(),
                 "replay": dict(self.replay), "reward_stats": self.reward_stats.clone()}
        if self.fake is not None:
            state |= {"fake": self.fake.transformer.state_dict(), "opt_fake": self.opt_fake.state_dict()}
        return state

    def resume(self) -> bool:
        found = checkpoint.latest(self.work)
        if not found:
            return False
        self.step, state, _ = found
        set_peft_model_state_dict(self.transformer, state["lora"], adapter_name=ADAPTER)
        self.lrm.load_state_dict(state["lrm"])
        self.opt.load_state_dict(state["opt"])
        self.opt_lrm.load_state_dict(state["opt_lrm"])
        if "reward_stats" in state:  # older checkpoints resume with fresh statistics
            self.reward_stats = state["reward_stats"].clone()
        if "replay" in state:  # checkpoints from before the replay buffer resume without one
            self.replay = {k: state["replay"][k].clone() for k in self.replay}
        if self.fake is not None:
            self.fake.transformer.load_state_dict(state["fake"])
            self.opt_fake.load_state_dict(state["opt_fake"])
        return True

    def _inputs(self, gen: torch.Generator, prompts: list[str]):
        """(x_t at a random listed level, level [B], text states) by backward simulation."""
        b = len(prompts)
        text = self.loaded.text.encode(prompts)
        k = int(torch.randint(len(self.sigmas), (1,), generator=gen))
        noise = torch.randn((b, *self.latent_shape), generator=gen).to(self.device)
        noise = frame_shared_noise(noise, self.loaded.noise_frame_share(self.student_steps), gen)
        x_t = backward_simulation(self.flow, noise, self.sigmas, k, text, gen)
        return x_t, torch.full((b,), self.sigmas[k], device=self.device), text

    def update(self) -> dict:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        rng = np.random.default_rng([cfg.seed, self.step])
        chosen = rng.integers(len(self.prompts), size=cfg.batch)
        prompts = [self.prompts[i] for i in chosen]
        x_t, level, text = self._inputs(gen, prompts)
        x = self.flow.predict_x0(x_t, level, text)  # grad through the LoRA only
        if self.score is None:  # ratings: the frozen LRM is the reward itself
            with torch.no_grad():
                rewards = self.lrm(x, text)
                logs = {"reward": rewards.mean().item()}
        else:
            rewards = torch.tensor(self.score(list(self.loaded.codec.decode(x.detach())), prompts), device=self.device)
            fit_x, fit_text, fit_r = self._with_replay(x.detach(), text, rewards, rng)
            self._remember(x.detach(), chosen, rewards)
            fit, logs = lrm_fit_loss(self.lrm(fit_x, fit_text, each=True), fit_r)
            self.opt_lrm.zero_grad(set_to_none=True)
            fit.backward()
            self.opt_lrm.step()
            logs["reward"] = rewards.mean().item()
        if cfg.reward_norm:
            self.reward_stats = running_stats(self.reward_stats, rewards)
        if self.step >= cfg.warmup_updates:
            self.lrm.requires_grad_(False)
            term, rlogs = reward_loss(self.lrm(x, text))
            self.lrm.requires_grad_(self.score is not None)
            loss = cfg.reward_scale * term
            if cfg.reward_norm:
                spread = float((self.reward_stats[2] / self.reward_stats[0]).sqrt())
                loss = loss / max(spread, 1e-6)
                logs["reward_sd"] = spread
            if cfg.reg == "base":
                self.transformer.disable_adapters()
                with torch.no_grad():
                    x_base = self.flow.predict_x0(x_t, level, text)
                self.transformer.enable_adapters()
                reg = torch.mean((x - x_base) ** 2)
                loss = loss + cfg.reg_weight * reg
                logs["reg"] = reg.item()
            elif cfg.reg == "vsd":
                reg = self._vsd(x, text, gen, logs)
                loss = loss + cfg.reg_weight * reg
            if not torch.isfinite(loss):
                raise FloatingPointError(f"tune loss is {loss.item()}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.lora_params, 1.0)
            self.opt.step()
            logs |= rlogs | {"loss": loss.item()}
        self.step += 1
        return logs


    def _with_replay(self, x: torch.Tensor, text: torch.Tensor, rewards: torch.Tensor, rng: np.random.Generator):
        """The batch plus up to `lrm_replay_batch` remembered samples (drawn before this batch is stored)."""
        held = min(int(self.replay["count"]), self.cfg.lrm_replay)
        if held == 0:
            return x, text, rewards.float()
        idx = torch.from_numpy(rng.integers(held, size=min(self.cfg.lrm_replay_batch, held)))
        old_text = self.loaded.text.encode([self.prompts[i] for i in self.replay["prompt"][idx].tolist()])
        return (torch.cat([x, self.replay["x"][idx].to(x.device, torch.float32)]), torch.cat([text, old_text]),
                torch.cat([rewards.float(), self.replay["reward"][idx].to(x.device)]))

    def _remember(self, x: torch.Tensor, prompt_ids, rewards: torch.Tensor) -> None:
        """Store the batch in the ring buffer (oldest replaced first)."""
        if not self.cfg.lrm_replay:
            return
        for i in range(len(prompt_ids)):
            slot = int(self.replay["count"]) % self.cfg.lrm_replay
            self.replay["x"][slot] = x[i].half().cpu()
            self.replay["prompt"][slot] = int(prompt_ids[i])
            self.replay["reward"][slot] = float(rewards[i])
            self.replay["count"] += 1

    def _vsd(self, x: torch.Tensor, text: torch.Tensor, gen: torch.Generator, logs: dict) -> torch.Tensor:
        """Fake-score updates on the detached sample, then L_VSD(x) (engine/distill/dmd.py)."""
        def apply(loss):
            self.opt_fake.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_fake.step()

        shift = self.loaded.info.shift
        fake_logs = dmd.fake_score_updates(self.fake, x, text, shift, self.cfg.fake_updates, gen, apply)
        reg, vlogs = dmd.vsd_term(x, self.teacher, self.fake, text, self.uncond.expand(x.shape[0], -1, -1),
                                  self.cfg.vsd_guidance, shift, gen)
        logs |= {"reg": reg.item(), "fake_loss": fake_logs["fake_flow_loss"], "vsd_grad_norm": vlogs["vsd_grad_norm"]}
        return reg


def running_stats(stats: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(count, mean, sum of squared deviations) updated with a batch of values (Chan et al.'s
    parallel form of Welford's update)."""
    v = values.detach().double().flatten().cpu()
    n, mean, m2 = stats.tolist()
    m, batch_mean = len(v), float(v.mean())
    delta, total = batch_mean - mean, n + len(v)
    return torch.tensor([total, mean + delta * m / total,
                         m2 + float(((v - batch_mean) ** 2).sum()) + delta**2 * n * m / total], dtype=torch.float64)


PHASES = {"warmup": "fitting the reward model", "tune": "tuning"}  # Progress.stage of each update


def train(cfg: TuneConfig, loaded: LoadedModel, work: Path, prompts: list[str] = (), resume: bool = True,
          should_stop: Callable[[], bool] = lambda: False) -> Iterator:
    """Run or continue a tune in the training-loop shell (engine/loop.py); yields Progress, then
    Result(tuner) or Failed.

    A tune makes `cfg.warmup_updates` updates that fit the latent reward model alone (stage
    "fitting the reward model", step k of the warm-up), then `cfg.steps` generator updates (stage
    "tuning", step n of steps), so every step asked for moves the weights. A reward that fails
    ends the run with no optimizer step taken on it; a cancel checkpoints first."""
    tuner = Tuner(cfg, loaded, work, prompts)
    warmup = cfg.warmup_updates
    if resume:
        tuner.resume()

    def save(done: int, logs: dict) -> bool:
        state = tuner.state()
        if not all(torch.isfinite(t).all() for t in state["lora"].values()):
            return False
        checkpoint.save(work, done, state, logs)
        return True

    def phase(done: int) -> loop.Phase:
        if done <= warmup:
            return loop.Phase(PHASES["warmup"], done, warmup)
        return loop.Phase(PHASES["tune"], done - warmup, cfg.steps)

    def step(i: int) -> dict:
        try:
            return tuner.update()
        except FloatingPointError:
            tuner.step += 1  # a skipped update still counts, as a run without a break would
            raise

    try:
        for event in loop.run(step, start=tuner.step, total=warmup + cfg.steps, save=save,
                              checkpoint_every=cfg.checkpoint_every, phase=phase, should_stop=should_stop,
                              skip=(FloatingPointError,), max_skipped=cfg.max_nonfinite):
            yield event
            if isinstance(event, Failed):
                return
    except RewardError as err:
        yield Failed(str(err), kind="error")  # no optimizer step was taken on this reward
        return
    yield Result(tuner)
