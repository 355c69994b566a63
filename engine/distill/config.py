"""The distillation run's typed configuration (docs/ARCHITECTURE.md §5.3-5.5): every knob with a default and a reason."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.knobs import check_share, strict_config
from engine.settings import check_ranges, setting

METHODS = ("vsd", "vsd+cd", "vsd+lrm", "vsd+cd+lrm")
REG_KNOBS = ("w_reg", "reg_pairs", "reg_guidance", "reg_steps")  # L_reg's; they do nothing while w_reg = 0
GAN_KNOBS = ("w_gan", "w_gan_d", "gan_mismatch")  # the GAN term's; they do nothing while w_gan = 0
PX_KNOBS = ("w_px", "px_reward")  # the pixel-reward term's; they do nothing while w_px = 0
DEFAULT_KEYED = {"noise_frame_share": 0.0, "gan_mismatch": False, "timesteps": None}  # knobs added later: a run at their default keeps its folder's key


@dataclass(frozen=True)
class DistillConfig:
    # the settings table (engine/settings.py): flag=True ones are `rushes distill` flags
    method: str = setting("vsd+cd+lrm", "which generator terms (the DOLLAR ablations)", choices=METHODS, flag=True)
    student_steps: int = setting(4, "student steps, evenly spaced: 4 -> 1000,750,500,250", low=1, high=8, flag=True)
    timesteps: list[int] | None = setting(None, "the student's own step list instead, e.g. 1000,757,522 (decreasing, "
                                                "in [1, 1000]; sets the step count)", flag=True)
    steps: int = setting(1000, "generator updates", low=1, flag=True)
    batch: int = setting(4, "clips per process per update", low=1)
    lr: float = setting(5e-5, "student (generator) learning rate")
    fake_lr: float = setting(1e-4, "fake score learning rate")
    lrm_lr: float = setting(1e-3, "latent reward model learning rate")
    fake_updates: int = setting(5, "fake-score updates per generator update (two time-scale rule)", low=1)
    w_vsd: float = setting(1.0, "weight of L_VSD", low=0)
    w_cd: float = setting(0.5, "weight of L_CD", low=0)
    w_ft: float = setting(0.1, "weight of L_FT = -mean R_lrm (1.0 collapsed students in the ablation, "
                               "docs/experiments/dollar-ablation.md)", low=0, flag=True)
    w_px: float = setting(0.0, "weight of L_px = -mean R_px(decode(x)), a differentiable pixel reward through the "
                               "VAE decoder (0 = off)", low=0, flag=True)
    px_reward: str = setting("toyworld-colour", "the differentiable pixel reward of L_px (engine/reward/pixel.py)",
                             flag=True)
    lrm_warmup: int = setting(50, "generator updates that fit the LRM alone before L_FT joins the loss", low=0,
                              flag=True)
    w_reg: float = setting(0.0, "weight of L_reg, regression on teacher ODE pairs (DMD's; 0 = off)", low=0, flag=True)
    reg_pairs: int = setting(256, "teacher ODE pairs made once per run for L_reg", flag=True)
    reg_guidance: float | None = setting(None, "teacher CFG for the pairs (None: the model's default guidance)")
    reg_steps: int | None = setting(None, "teacher ODE steps for the pairs (None: the model's default teacher steps)")
    w_gan: float = setting(0.0, "weight of DMD2's generator GAN loss L_G (engine/distill/gan.py; 0 = off; DMD2 5e-3)",
                           low=0, flag=True)
    w_gan_d: float = setting(1e-2, "weight of the discriminator loss L_D inside each fake-score update (DMD2's)")
    gan_mismatch: bool = setting(False, "matching-aware D: real clips under another clip's caption count as fake "
                                        "(gan.py)", flag=True)
    vsd_guidance: float = setting(3.5, "teacher CFG inside the VSD real score")
    vsd_min_level: float = setting(0.02, "VSD noise level clamp, low end", low=0, high=1)
    vsd_max_level: float = setting(0.98, "VSD noise level clamp, high end", low=0, high=1)
    cd_guidance: float = setting(3.5, "teacher CFG inside the CD ODE solver (7.5, LCM's, cost toyworld semantics and "
                                      "diversity)")
    cd_m: int = setting(5, "teacher ODE steps per consistency pair (1 or 5 in the ablation)", flag=True)
    cd_grid: int = setting(50, "teacher grid the CD pairs are drawn from", low=2)
    cd_distance: str = setting("huber", '"huber" or "mse"', choices=("huber", "mse"))
    ema_decay: float = setting(0.95, "EMA of the student used as the CD target (LCM's value)", low=0, high=1)
    noise_frame_share: float = setting(0.0, "share of the student's starting noise common to all frames "
                                            "(sampling.frame_shared_noise; 0 = iid)", flag=True)
    generator_input: str = setting("backward", "backward simulation from noise, or real latents noised",
                                   choices=("backward", "real"))
    reward: str = setting("toyworld-semantic", "pixel reward the LRM learns (a built-in name)", flag=True)
    lrm_width: int = setting(128, "LRM channels")
    lrm_text: bool = setting(True, "text-conditioned LRM (needed for prompt-dependent rewards)")
    checkpoint_every: int = setting(50, "updates between atomic checkpoints", low=1)
    max_nonfinite: int = setting(3, "consecutive non-finite losses before the run stops as diverged", low=1)
    pool_capacity: int = setting(4000, "encoded real clips kept", low=1)
    new_clips_per_step: int = setting(1, "real clips rendered and encoded per update", low=0)
    frames: int = setting(17, "real clip length in frames (rendered, or cut from --videos)", low=1)
    size: int = setting(64, "real clip side in pixels (rendered, or resized from --videos)", low=8)
    init_student: int | None = setting(None, "start from the model's n-step student (e.g. 2 from 4) instead of the "
                                             "teacher", flag=True)
    autocast: bool = setting(True, "bf16 autocast (where the device runs it natively) for fake updates, the CD "
                                   "teacher solve, the generator pass, reward decoding")
    seed: int = setting(0, "seed of the run's weights, noise and data draws", low=0)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 1 <= self.student_steps <= 8:
            raise ValueError(f"student_steps must be 1 to 8, got {self.student_steps}")
        if self.timesteps is not None:
            ts = self.timesteps
            if (not isinstance(ts, list) or len(ts) != self.student_steps or not all(isinstance(t, int) for t in ts)
                    or not all(1 <= t <= 1000 for t in ts) or any(a <= b for a, b in zip(ts, ts[1:]))):
                raise ValueError(f"timesteps must be {self.student_steps} decreasing integers in [1, 1000] "
                                 f"(one per student step), got {ts!r}")
        if self.generator_input not in ("backward", "real"):
            raise ValueError(f"generator_input must be 'backward' or 'real', got {self.generator_input!r}")
        check_share("noise_frame_share", self.noise_frame_share)
        if not 1 <= self.cd_m < self.cd_grid:
            raise ValueError(f"cd_m must be in [1, cd_grid), got {self.cd_m}")
        if self.lrm_warmup < 0 or self.w_ft < 0:
            raise ValueError(f"lrm_warmup and w_ft must be >= 0, got {self.lrm_warmup} and {self.w_ft}")
        if self.w_px < 0:
            raise ValueError(f"w_px must be >= 0, got {self.w_px}")
        if self.w_px > 0:
            from engine.reward import pixel
            pixel.get(self.px_reward)  # names the unknown reward
        if self.w_reg < 0:
            raise ValueError(f"w_reg must be >= 0, got {self.w_reg}")
        if self.w_reg > 0 and self.reg_pairs < self.batch:
            raise ValueError(f"reg_pairs must be at least batch ({self.batch}) when w_reg > 0, got {self.reg_pairs}")
        if self.w_gan < 0 or self.w_gan_d <= 0:
            raise ValueError(f"w_gan must be >= 0 and w_gan_d > 0, got {self.w_gan} and {self.w_gan_d}")
        if self.gan_mismatch and self.batch < 2:
            raise ValueError(f"gan_mismatch pairs each real clip with another clip's caption: batch must be >= 2, "
                             f"got {self.batch}")
        if self.reg_steps is not None and self.reg_steps < 1:
            raise ValueError(f"reg_steps must be >= 1, got {self.reg_steps}")
        for name in ("steps", "batch", "fake_updates", "checkpoint_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_ranges(self)  # the table's ranges, after the checks above that say more

    @property
    def use_cd(self) -> bool:
        return "cd" in self.method.split("+")

    @property
    def use_reg(self) -> bool:
        return self.w_reg > 0

    @property
    def use_gan(self) -> bool:
        return self.w_gan > 0

    @property
    def use_px(self) -> bool:
        return self.w_px > 0

    @property
    def use_lrm(self) -> bool:
        return "lrm" in self.method.split("+")

    @classmethod
    def from_dict(cls, data: dict) -> "DistillConfig":
        return strict_config(cls, data, "distillation settings")

    @classmethod
    def from_file(cls, path: str | Path) -> "DistillConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return asdict(self)

    def student_timesteps(self) -> list[int]:
        """The student's step list: `timesteps`, or the evenly spaced one for `student_steps`."""
        from engine.schedule import default_student_timesteps

        return list(self.timesteps) if self.timesteps is not None else default_student_timesteps(self.student_steps)

    def run_settings(self) -> dict:
        """The settings that decide what a run computes: `to_dict` less the knobs of a term that
        is off (so a run folder keyed by them keeps its key when such a term is added)."""
        off = (() if self.use_reg else REG_KNOBS) + (() if self.use_gan else GAN_KNOBS) + (() if self.use_px else PX_KNOBS)
        off += tuple(k for k, v in DEFAULT_KEYED.items() if getattr(self, k) == v)
        return {k: v for k, v in self.to_dict().items() if k not in off}
