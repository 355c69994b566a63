"""The causal student's distillation settings (docs/ARCHITECTURE.md §5.8): one table
(engine/settings.py), every setting with a default and a reason."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.knobs import strict_config
from engine.settings import check_ranges, setting
from engine.stream.cache import Window


@dataclass(frozen=True)
class CausalConfig:
    chunk: int = setting(4, "latent frames per chunk", low=1, high=64, flag=True)
    sink: int = setting(1, "first chunks every later chunk attends to (the attention sink)", low=0, high=16, flag=True)
    recent: int = setting(2, "chunks before the current one it attends to, besides the sink", low=0, high=64,
                          flag=True)
    retime: bool = setting(False, "when the window rolls, run the recent chunks again at their new slots, so their "
                                  "frame time is their slot's (docs/experiments/live-stream.md, section 5)", flag=True)
    student_steps: int = setting(4, "student steps per chunk, evenly spaced: 4 -> 1000,750,500,250", low=1, high=8,
                                 flag=True)
    ode_steps: int = setting(200, "updates regressing the rollout on teacher ODE pairs first (CausVid's "
                                  "initialisation)", low=0, flag=True)
    continuation_steps: int = setting(0, "updates of the continuation term alone between the ODE and DMD phases (no "
                                         "teacher in the loop: an update costs the context's chunk passes); needs a "
                                         "data source with real clips", low=0, flag=True)
    dmd_steps: int = setting(300, "updates of distribution matching on the student's own rollouts (Self-Forcing)",
                             low=0, flag=True)
    rollout_chunks: int = setting(0, "0: a DMD rollout fills the window once (Self-Forcing). N: each update draws "
                                     "a length from the window's slots to N chunks and the DMD terms score its last "
                                     "window, so training sees the rolled cache a long stream runs on (measured worse "
                                     "at 8 on toyworld: docs/experiments/live-stream.md)", low=0, flag=True)
    switch_share: float = setting(0.0, "share of DMD rollouts whose prompt switches inside the scored window (at a "
                                       "chunk drawn from 1 to the window's slots - 1, the cache rebuilt as a stream's "
                                       "is); those windows are scored under the new prompt and only the chunks made "
                                       "under it learn (LongLive's training on switches)", low=0, high=1, flag=True)
    continuation_weight: float = setting(0.0, "weight of the continuation term (engine/stream/continuation.py): the "
                                              "student's chunk regressed onto ground-truth long clips given their past, "
                                              "added to every update; needs a data source with real clips; 0 = off",
                                         low=0, flag=True)
    continuation_chunks: int = setting(24, "chunks of a ground-truth long clip; the term fits chunk 1 to this - 1 "
                                           "(toyworld: a mover leaves by one edge and is back in by ~16)", low=2,
                                       flag=True)
    continuation_clips: int = setting(256, "ground-truth long clips kept encoded for the term (one new per update)",
                                      low=1)
    batch: int = setting(4, "rollouts per update", low=1)
    lr: float = setting(5e-5, "student learning rate")
    fake_lr: float = setting(1e-4, "fake score learning rate")
    fake_updates: int = setting(5, "fake-score updates per student update in the DMD phase (two time-scale rule)",
                                low=1)
    vsd_guidance: float = setting(3.5, "teacher CFG inside the VSD real score")
    vsd_min_level: float = setting(0.02, "VSD noise level clamp, low end", low=0, high=1)
    vsd_max_level: float = setting(0.98, "VSD noise level clamp, high end", low=0, high=1)
    pairs: int = setting(256, "teacher ODE pairs made once per run for the regression phase", low=1)
    pair_guidance: float | None = setting(None, "teacher CFG for the pairs (None: the model's default guidance)")
    pair_steps: int | None = setting(None, "teacher ODE steps for the pairs (None: the model's default)")
    reward: str = setting("", "a built-in reward whose Re-DMD weights lean the DMD gradient (Reward Forcing); "
                              "empty = off", flag=True)
    reward_beta: float = setting(1.0, "Re-DMD temperature: weights are B * softmax(beta * reward) over the batch",
                                 low=0, flag=True)
    ema_decay: float = setting(0.99, "EMA of the student; the EMA is what is exported", low=0, high=1)
    checkpoint_every: int = setting(50, "updates between atomic checkpoints", low=1)
    max_nonfinite: int = setting(3, "consecutive non-finite losses before the run stops as diverged", low=1)
    seed: int = setting(0, "seed of the run's noise and prompt draws", low=0)

    def __post_init__(self):
        window = self.window  # names a bad window field
        if 0 < self.rollout_chunks < window.slots:
            raise ValueError(f"rollout_chunks must be 0 (one window) or at least the window's {window.slots} slots "
                             f"(sink + recent + 1), got {self.rollout_chunks}")
        if self.steps < 1:
            raise ValueError(f"a causal distillation needs at least one update, got ode_steps {self.ode_steps}, "
                             f"continuation_steps {self.continuation_steps} and dmd_steps {self.dmd_steps}")
        if self.reward:
            from engine.reward import builtin
            builtin.get(self.reward)  # names the unknown reward
        check_ranges(self)

    @property
    def window(self) -> Window:
        return Window(self.chunk, self.sink, self.recent, self.retime)

    @property
    def steps(self) -> int:
        return self.ode_steps + self.continuation_steps + self.dmd_steps

    def stages(self) -> list[tuple[str, int]]:
        """The run's phases in order, each with its number of updates."""
        return [("ode", self.ode_steps), ("continuation", self.continuation_steps), ("dmd", self.dmd_steps)]

    def stage(self, step: int) -> str:
        """The phase that update `step` (0-based) belongs to."""
        start = 0
        for name, length in self.stages():
            start += length
            if step < start:
                return name
        return "dmd"

    def student_timesteps(self) -> list[int]:
        from engine.schedule import default_student_timesteps

        return default_student_timesteps(self.student_steps)

    @classmethod
    def from_dict(cls, data: dict) -> "CausalConfig":
        return strict_config(cls, data, "causal distillation settings")

    @classmethod
    def from_file(cls, path: str | Path) -> "CausalConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return asdict(self)
