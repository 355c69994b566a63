"""A latent-reward LoRA tune's typed configuration (DESIGN.md §4)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from engine.knobs import check_device, strict_config

REGULARISERS = ("base", "vsd", "none")
SELF_ATTENTION_AND_FFN = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ffn.net.0.proj", "ffn.net.2")


@dataclass(frozen=True)
class TuneConfig:
    model: str = "toyworld"  # pipeline whose student is tuned
    student_steps: int = 4  # which student (its fixed step list)
    device: str = "cpu"  # where the tune computes: "cpu", "cuda", "cuda:N" or "auto" (engine.runtime)
    reward: str = "colourfulness"  # built-in name, "palette" or "custom"
    reference: str | None = None  # palette reward: reference image
    reward_file: str | None = None  # custom reward: .py file
    reward_model: str | None = None  # model rewards: weights folder (default $RUSHES_HOME/reward-models/<name>)
    steps: int = 300  # generator (LoRA) updates
    rank: int = 8  # LoRA rank
    alpha: float = 8.0  # LoRA alpha (scale = alpha / rank)
    # which Linear layers the LoRA adapts (names or dotted suffixes, as peft matches them): self-attention and the
    # feed-forward, not the cross-attention that reads the prompt; moved every built-in reward further with fewer
    # semantic points lost than to_q/k/v/out.0 of both attentions (docs/experiments/reward-tuning.md, reward tuning)
    target_modules: list[str] = field(default_factory=lambda: list(SELF_ATTENTION_AND_FFN))
    lr: float = 1e-3  # LoRA learning rate
    lrm_lr: float = 1e-3  # latent reward model learning rate
    lrm_warmup: int = 10  # updates fitting only the LRM before the LoRA moves
    lrm_members: int = 1  # LRM ensemble size: the LoRA climbs the members' mean, each member fits on its own
    lrm_replay: int = 0  # past (sample, prompt, reward) kept to refit the LRM on; 0 = current batch only
    # (128 measured worse for colourfulness: +32% and LRM r 0.60 vs +50% and r 0.80 without; docs/experiments/reward-tuning.md)
    lrm_replay_batch: int = 12  # replayed samples added to each LRM update (no new decode or reward call)
    ratings_views: int = 3  # reward "ratings": denoised copies of each rated clip in the fit (engine/reward/ratings.py)
    ratings_text: bool = True  # reward "ratings": condition the ratings LRM on the prompt
    batch: int = 4  # clips per update
    reg: str = "base"  # regulariser: "base" (distance to the frozen student), "vsd" (DMD2 term vs the teacher), "none"
    reg_weight: float = 1.0  # lambda in -LRM + lambda * regulariser
    fake_updates: int = 2  # reg "vsd": fake-score updates per LoRA update
    fake_lr: float = 1e-4  # reg "vsd": fake-score learning rate
    vsd_guidance: float = 3.5  # reg "vsd": teacher CFG in the real score
    reward_scale: float = 1.0  # multiplies the LRM term
    # divide the LRM term by the reward's running sd (reward_scale then counts in sds); off: on the ratings
    # tune it pushed harder at a large semantic cost without a reliable taste gain (docs/experiments/reward-tuning.md)
    reward_norm: bool = False
    prompts: list[str] = field(default_factory=list)  # empty: toyworld train captions
    checkpoint_every: int = 25
    max_nonfinite: int = 3
    seed: int = 0

    def __post_init__(self):
        check_device(self.device)
        if self.reg not in REGULARISERS:
            raise ValueError(f"reg must be one of {REGULARISERS}, got {self.reg!r}")
        for name in ("steps", "rank", "batch", "checkpoint_every", "fake_updates", "lrm_replay_batch", "lrm_members"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lrm_replay", "ratings_views"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.target_modules or not all(isinstance(m, str) and m.strip() for m in self.target_modules):
            raise ValueError(f"target_modules must be a non-empty list of layer names, got {self.target_modules!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")

    @classmethod
    def from_dict(cls, data: dict) -> "TuneConfig":
        return strict_config(cls, data, "tune settings")

    def reward_spec(self):
        from engine.reward.spec import RewardSpec

        return RewardSpec(self.reward, self.reference, self.reward_file, self.reward_model)

    def to_dict(self) -> dict:
        return asdict(self)
