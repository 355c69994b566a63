"""A latent-reward LoRA tune's typed configuration (docs/ARCHITECTURE.md §5.6)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from engine.knobs import check_device, strict_config
from engine.settings import check_ranges, setting

REGULARISERS = ("base", "vsd", "none")
SELF_ATTENTION_AND_FFN = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ffn.net.0.proj", "ffn.net.2")


@dataclass(frozen=True)
class TuneConfig:
    # the settings table (engine/settings.py): flag=True ones are `rushes tune` flags; the Tune tab's
    # fields take their range, default and help from here
    model: str = setting("toyworld", "pipeline whose student is tuned")
    student_steps: int | None = setting(None, "which student, by its step count; none: the model's own (its "
                                        "4-step one, else its fewest-step one)", low=1, high=8, flag=True)
    device: str = setting("cpu", "where the tune computes: cpu, cuda, cuda:N or auto (cuda when available)", flag=True)
    reward: str = setting("colourfulness", "built-in name, 'palette' (needs --reference) or 'custom' "
                          "(needs --reward-file), 'ratings' or a model reward")
    reference: str | None = setting(None, "palette reward: image whose colour palette the clips should match",
                                    flag=True)
    reward_file: str | None = setting(None, "custom reward: a .py file defining reward(frames, prompt) -> float",
                                      flag=True)
    reward_model: str | None = setting(None, "model rewards: a local weights folder; none: "
                                       "$RUSHES_HOME/reward-models/<name>", flag=True)
    steps: int = setting(300, "LoRA updates, after the reward model's warm-up", low=1, high=100_000, flag=True)
    rank: int = setting(8, "LoRA rank: the adapter's capacity", low=1, high=256, flag=True)
    alpha: float = setting(8.0, "LoRA alpha (scale = alpha / rank; the command line and the studio set it to the rank)")
    # self-attention and the feed-forward, not the cross-attention that reads the prompt: moved every built-in
    # reward further with fewer semantic points lost than to_q/k/v/out.0 of both attentions
    # (docs/experiments/reward-tuning.md, reward tuning)
    target_modules: list[str] = setting(help="Linear layers the LoRA adapts, names or dotted suffixes as peft "
                                        "matches them", factory=lambda: list(SELF_ATTENTION_AND_FFN), flag=True)
    lr: float = setting(1e-3, "LoRA learning rate", low=0, high=1e4, flag=True)
    lrm_lr: float = setting(1e-3, "latent reward model learning rate", low=0)
    lrm_warmup: int = setting(10, "updates fitting only the reward model before the LoRA moves (none for "
                              "'ratings': fitted before)", low=0, high=10_000)
    lrm_members: int = setting(1, "reward model ensemble size: the LoRA climbs the members' mean", low=1, high=16)
    # (128 measured worse for colourfulness: +32% and LRM r 0.60 vs +50% and r 0.80 without; docs/experiments/reward-tuning.md)
    lrm_replay: int = setting(0, "past (sample, prompt, reward) kept to refit the reward model on; 0 = this batch only",
                              low=0)
    lrm_replay_batch: int = setting(12, "replayed samples added to each reward-model update", low=1)
    ratings_views: int = setting(3, "reward 'ratings': denoised copies of each rated clip in the fit", low=0)
    ratings_text: bool = setting(True, "reward 'ratings': condition the ratings reward model on the prompt")
    batch: int = setting(4, "clips per update", low=1, high=1024, flag=True)
    reg: str = setting("base", "regulariser: base (distance to the frozen student), vsd (the DMD2 term against "
                       "the teacher; slower) or none", choices=REGULARISERS, flag=True)
    reg_weight: float = setting(1.0, "lambda in -reward + lambda * regulariser", low=0)
    fake_updates: int = setting(2, "reg vsd: fake-score updates per LoRA update", low=1)
    fake_lr: float = setting(1e-4, "reg vsd: fake-score learning rate", low=0)
    vsd_guidance: float = setting(3.5, "reg vsd: teacher CFG in the real score", low=0)
    reward_scale: float = setting(1.0, "multiplies the reward model's term")
    # off: on the ratings tune it pushed harder at a large semantic cost without a reliable taste gain
    # (docs/experiments/reward-tuning.md)
    reward_norm: bool = setting(False, "divide the reward term by the reward's running sd (reward_scale then "
                                "counts in sds)")
    prompts: list[str] = setting(help="prompts to tune on; empty: the model's own world's", factory=list)
    checkpoint_every: int = setting(25, "updates between atomic checkpoints", low=1)
    max_nonfinite: int = setting(3, "non-finite losses in a row before the run stops as diverged", low=1)
    seed: int = setting(0, "seed of the tune's noise and prompt draws", low=0)

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
        check_ranges(self)  # the table's ranges, after the checks above that say more

    @classmethod
    def from_dict(cls, data: dict) -> "TuneConfig":
        return strict_config(cls, data, "tune settings")

    @property
    def warmup_updates(self) -> int:
        """Updates that fit the latent reward model alone before the `steps` generator updates; the
        ratings reward's model is fitted before the tune starts, so it has none."""
        return 0 if self.reward == "ratings" else self.lrm_warmup

    def reward_spec(self):
        from engine.reward.spec import RewardSpec

        return RewardSpec(self.reward, self.reference, self.reward_file, self.reward_model)

    def to_dict(self) -> dict:
        return asdict(self)
