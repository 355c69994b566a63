"""The model wrapper every role shares: `predict_x0`, `add_noise`, `decode` (docs/ARCHITECTURE.md §5.1).

Roles (teacher, student, fake_score) are configuration of this one class, not subclasses.
Flow matching, Wan convention: `x_t = (1 - s) x0 + s eps`, the network predicts
`v = eps - x0`, so `x0 = x_t - s v`; the transformer sees timestep `1000 s`.

Position channels: Wan's transformer knows positions only through 3D RoPE, which is relative,
so from pure noise it cannot tell the first frame from the last, and its x0 estimate at s = 1
carries no direction of motion (measured on the toyworld teacher: `bench/teacher_probe.py
--drift`). A network whose config has `rushes_position_channels = 3` reads three extra input
channels (frame time, row, column, each from -1 to 1 over the clip), as Wan's image-to-video
variant reads its extra conditioning channels; `FlowModel` appends them. Real Wan checkpoints
have none and are fed exactly as before.

Frame context: a network whose config has `rushes_frame_context = K` also reads, for each latent
frame, the latents of the K frames before and after it (zeros past the clip's ends), appended
after the position channels. With a per-frame VAE a token otherwise holds one frame, so a moving
object's direction is visible only across tokens, along a diagonal in (frame, row, column) that
RoPE's per-axis kernels cannot follow; with context, each token along the trajectory carries the
direction itself. Measured on the toyworld teacher (K = 4, 2500 steps from the shipped export) it
did not make the teacher read the direction word (docs/experiments/teacher-direction.md, "Tokens that see their
neighbouring frames"); the toyworld bake keeps it off.
"""

from __future__ import annotations

import logging
import re

import torch

from engine.codec import VideoCodec


def add_noise(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """x_t = (1 - s) x0 + s eps; sigma is a float or [B] (broadcast over C, T, H, W)."""
    s = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device)
    s = s.view(-1, *([1] * (x0.dim() - 1))) if s.dim() else s
    return (1 - s) * x0 + s * eps


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 = x_t - s v, with sigma [B] broadcast over C, T, H, W."""
    return x_t - sigma.view(-1, *([1] * (x_t.dim() - 1))) * v


POSITION_KEY = "rushes_position_channels"
CONTEXT_KEY = "rushes_frame_context"


class _OwnConfigKey(logging.Filter):
    """diffusers warns that config keys it does not know "will be ignored"; ours are read here."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("The config attributes {"):
            return True
        named = set(re.findall(r"'(\w+)':", message.partition("}")[0]))
        return not named <= {POSITION_KEY, CONTEXT_KEY}


logging.getLogger("diffusers.configuration_utils").addFilter(_OwnConfigKey())


def _config_count(transformer, key: str) -> int:
    """An integer our config keys hold (0 when absent); looks through a DistributedDataParallel
    wrapper (`.module`)."""
    network = getattr(transformer, "module", transformer)
    return int(getattr(network.config, key, 0) or 0)


def position_channels(transformer) -> int:
    """How many position channels the network expects after the latent channels (0 or 3)."""
    return _config_count(transformer, POSITION_KEY)


def frame_context(transformer) -> int:
    """How many latent frames on each side the network reads beside each frame (0: none)."""
    return _config_count(transformer, CONTEXT_KEY)


def frame_neighbours(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B, 2 k C, T, h, w]: at frame t, the latents of frames t-k .. t-1 then t+1 .. t+k of
    x [B, C, T, h, w], zeros past either end of the clip."""
    if k < 0:
        raise ValueError(f"{CONTEXT_KEY} must be >= 0, got {k}")
    t = x.shape[2]
    padded = torch.nn.functional.pad(x, (0, 0, 0, 0, k, k))  # [B, C, T + 2k, h, w]
    return torch.cat([padded[:, :, k + o:k + o + t] for o in range(-k, k + 1) if o], dim=1)


def network_inputs(x: torch.Tensor, transformer, frame_times: torch.Tensor | None = None) -> torch.Tensor:
    """What the network reads for latents x [B, C, T, h, w]: x, then its position channels, then
    its frame context (each only where its config asks for them). `frame_times` [T]: the frame-time
    channel's values when x is part of a longer clip (a stream's chunk), instead of -1 .. 1 over x."""
    wide = with_positions(x, position_channels(transformer), frame_times)
    k = frame_context(transformer)
    return torch.cat([wide, frame_neighbours(x, k)], dim=1) if k else wide


def with_positions(x: torch.Tensor, count: int, frame_times: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, C, T, h, w] with `count` (0 or 3) channels appended: frame time, row, column in [-1, 1]
    (the frame time's values given by `frame_times` [T] where x is part of a longer clip)."""
    if count == 0:
        return x
    if count != 3:
        raise ValueError(f"{POSITION_KEY} must be 0 or 3, got {count}")
    b, _, t, h, w = x.shape

    def ramp(n: int) -> torch.Tensor:
        return torch.linspace(-1.0, 1.0, n, device=x.device, dtype=x.dtype) if n > 1 else x.new_zeros(1)

    if frame_times is not None and frame_times.shape != (t,):
        raise ValueError(f"frame_times must hold one value per frame ({t}), got shape {tuple(frame_times.shape)}")
    times = ramp(t) if frame_times is None else frame_times.to(x.device, x.dtype)
    grids = torch.meshgrid(times, ramp(h), ramp(w), indexing="ij")  # 3 x [T, h, w]
    return torch.cat([x, torch.stack(grids)[None].expand(b, -1, -1, -1, -1)], dim=1)


def widen_inputs(transformer, count: int = 0, context: int = 0):
    """A copy of `transformer` that also reads `count` position channels and/or `context` frames
    of frame context on each side, with zero weights on the new channels: it computes exactly
    what the original did until training moves those weights."""
    from diffusers import WanTransformer3DModel

    if count and position_channels(transformer):
        raise ValueError("the transformer already reads position channels")
    if context and frame_context(transformer):
        raise ValueError("the transformer already reads frame context")
    if count and frame_context(transformer):
        raise ValueError("position channels come before the frame context; widen positions first")
    if not count and not context:
        raise ValueError("widen_inputs: nothing to add (count and context are both 0)")
    latent = transformer.config.out_channels
    added = count + 2 * context * latent
    cfg = {k: v for k, v in transformer.config.items() if not k.startswith("_") and k not in (POSITION_KEY, CONTEXT_KEY)}
    wide = WanTransformer3DModel(**(cfg | {"in_channels": cfg["in_channels"] + added}))
    state = transformer.state_dict()
    weight = state["patch_embedding.weight"]  # [D, C, pt, ph, pw]
    state["patch_embedding.weight"] = torch.cat([weight, weight.new_zeros(weight.shape[0], added, *weight.shape[2:])], 1)
    wide.load_state_dict(state)
    wide.register_to_config(**{POSITION_KEY: count or position_channels(transformer),
                               CONTEXT_KEY: context or frame_context(transformer)})
    return wide.to(weight.dtype)


def check_positions(transformer, latent_shape: tuple[int, ...], frames: int, height: int, width: int) -> None:
    """ValueError naming the clip size whose patches outrun the transformer's rotary table:
    diffusers' Wan rope precomputes `rope_max_seq_len` positions per axis (frames, height, width
    of the patch grid) and fails with a bare reshape error past them. `latent_shape`: (C, T', h, w)."""
    limit = getattr(transformer.config, "rope_max_seq_len", None)
    patch = getattr(transformer.config, "patch_size", None)
    if limit is None or patch is None:
        return
    sizes = {"frames": frames, "height": height, "width": width}
    for (name, value), extent, p in zip(sizes.items(), latent_shape[1:], patch):
        if extent // p > limit:
            raise ValueError(f"{name} {value} is too large for this model: it needs {extent // p} rotary "
                             f"positions along that axis and the transformer holds {limit}")


def guided(v_uncond: torch.Tensor, v_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: v_u + w (v_c - v_u)."""
    return v_uncond + guidance * (v_cond - v_uncond)


class FlowModel:
    """A diffusers video transformer seen as a flow-matching denoiser, plus the codec."""

    def __init__(self, transformer, codec: VideoCodec | None = None):
        self.transformer = transformer
        self.codec = codec
        self.nfe = 0  # network evaluations; a CFG step counts two

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype: the patch embedding's (diffusers keeps norms and time embeddings
        in float32 under a bf16 load, so the first parameter can mislead)."""
        embed = getattr(self.transformer, "patch_embedding", None)
        return embed.weight.dtype if embed is not None else next(self.transformer.parameters()).dtype

    def velocity(self, x_t: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """v prediction (float32) for x_t [B, C, T, h, w], sigma [B], text states [B, L, D]."""
        self.nfe += 1
        x_in = network_inputs(x_t.to(self.device, self.dtype), self.transformer)
        out = self.transformer(
            hidden_states=x_in,
            # float32 as diffusers' own pipelines pass it: in bf16, 757 would reach the network as 756
            timestep=(sigma * 1000).to(self.device, torch.float32),
            encoder_hidden_states=text.to(self.device, self.dtype),
            return_dict=False,
        )[0]
        return out.float()

    def guided_velocity(self, x_t, sigma, text, uncond=None, guidance: float = 1.0) -> torch.Tensor:
        """v with classifier-free guidance; one batched pass of [uncond; cond] counted as 2 NFE."""
        if uncond is None or guidance == 1.0:
            return self.velocity(x_t, sigma, text)
        v = self.velocity(torch.cat([x_t, x_t]), torch.cat([sigma, sigma]), torch.cat([uncond, text]))
        self.nfe += 1
        v_uncond, v_cond = v.chunk(2)
        return guided(v_uncond, v_cond, guidance)

    def predict_x0(self, x_t, sigma, text, uncond=None, guidance: float = 1.0) -> torch.Tensor:
        """x0 estimate (float32) from x_t at noise level sigma [B]."""
        v = self.guided_velocity(x_t, sigma, text, uncond, guidance)
        return x0_from_velocity(x_t.float(), v, sigma.to(v.device, torch.float32))

    add_noise = staticmethod(add_noise)

    def decode(self, latents: torch.Tensor):
        """uint8 frames [B, T, H, W, 3] from normalised latents."""
        return self.codec.decode(latents)
