"""How the engine runs models on this machine: device, dtype and the GPU memory options.

- `dtype`: weights and compute dtype (bf16 on a GPU; fp32 on the CPU, where toyworld is small).
  Attention goes through PyTorch's SDPA, which diffusers' Wan attention processor calls.
- `compile`: regional compilation, `torch.compile` of each repeated transformer block (one
  compiled graph reused 30-40 times, far shorter warm-up than compiling the whole model).
- `offload`: model CPU offload. Weights live on the CPU; the text encoder, the transformer and
  the VAE each move to the device only for their stage, so peak memory is the largest one.
- `vae_tiling` / `vae_slicing`: the VAE decodes in spatial tiles / one clip or frame at a time.
- `memory_fraction`: caps this process's share of the GPU (CUDA only), e.g. to share a card.
- `decode_dtype`: the VAE decode's dtype. "auto" (the default) decodes in bf16 where the device
  runs bf16 natively (a CUDA card with bf16, or a CPU with oneDNN bf16: AVX512-BF16/AMX) and
  as loaded elsewhere. On toyworld (`python bench/vae.py`), bf16 decoding changes pixels by at
  most 3 of 255 with reconstruction PSNR unchanged (34.96 vs 34.93 dB), at 0.62x the time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from engine.knobs import check_device
from engine.loading import DTYPES  # one table of dtype names for the registry and the runtime


@dataclass(frozen=True)
class RuntimeOptions:
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto" (cuda when available)
    dtype: str = "float32"  # one of DTYPES
    decode_dtype: str | None = "auto"  # VAE decode dtype: "auto", one of DTYPES, or None = as loaded
    compile: bool = False  # torch.compile the repeated transformer blocks
    offload: bool = False  # model CPU offload: each model on the device only while it runs
    vae_tiling: bool = False  # decode in spatial tiles
    vae_slicing: bool = False  # decode one clip (per-frame AutoencoderKL: one frame) at a time
    memory_fraction: float | None = None  # CUDA: cap on this process's share of the card

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.decode_dtype not in (None, "auto", *DTYPES):
            raise ValueError(f"decode dtype must be auto or one of {sorted(DTYPES)}, got {self.decode_dtype!r}")
        check_device(self.device)
        if self.resolved_device().startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but this machine has no CUDA GPU")
        if self.memory_fraction is not None and not 0 < self.memory_fraction <= 1:
            raise ValueError(f"memory fraction must be in (0, 1], got {self.memory_fraction}")

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def torch_decode_dtype(self) -> torch.dtype | None:
        """The decode dtype to use here; None = the VAE's own (as loaded)."""
        if self.decode_dtype == "auto":
            return torch.bfloat16 if native_bf16(self.resolved_device()) else None
        return DTYPES[self.decode_dtype] if self.decode_dtype else None

    @property
    def load_device(self) -> str:
        """Where weights are loaded: the CPU under offload, else the compute device."""
        return "cpu" if self.offload else self.resolved_device()

    def describe(self) -> dict:
        decode = self.torch_decode_dtype
        return {"device": self.resolved_device(), "dtype": self.dtype,
                "decode_dtype": str(decode).removeprefix("torch.") if decode else self.dtype, "compile": self.compile,
                "offload": self.offload, "vae_tiling": self.vae_tiling, "vae_slicing": self.vae_slicing}


def native_bf16(device: str) -> bool:
    """Whether `device` computes in bf16 natively (else bf16 is emulated and often slower)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_autocast(device_type: str, wanted: bool = True):
    """bf16 autocast (fp32 master weights) for a training pass, where the device computes bf16
    natively; elsewhere a disabled autocast, so the pass runs in float32. On a CPU without oneDNN
    bf16 (AVX2 only) one toyworld teacher step took 20.6x as long under bf16 autocast as in fp32;
    on one with it, faster (the bake measured about 1.7x); `python bench/amp.py` times both here."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=wanted and native_bf16(device_type))


def apply(loaded, options: RuntimeOptions) -> None:
    """Set up a freshly loaded model for these options (compile, VAE tiling/slicing, memory cap)."""
    vae = loaded.codec.vae
    if options.vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if options.vae_slicing and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if options.compile:
        for flow in [loaded.teacher, *(f for f, _ in loaded.students.values())]:
            compile_blocks(flow.transformer)
    device = options.resolved_device()
    if options.memory_fraction is not None and device.startswith("cuda"):
        index = torch.device(device).index  # torch wants the card's index; "cuda" means the current one
        torch.cuda.set_per_process_memory_fraction(options.memory_fraction,
                                                   torch.cuda.current_device() if index is None else index)


def compile_blocks(transformer) -> None:
    """Regional compilation: each repeated block compiled in place (diffusers' own helper when present)."""
    if getattr(transformer, "_rushes_compiled", False):
        return
    if getattr(transformer, "_repeated_blocks", None) and hasattr(transformer, "compile_repeated_blocks"):
        transformer.compile_repeated_blocks(fullgraph=True)
    else:
        for block in getattr(transformer, "blocks", []):
            block.compile(fullgraph=True)
    transformer._rushes_compiled = True


@contextlib.contextmanager
def placed(module: torch.nn.Module, options: RuntimeOptions):
    """Under offload: the module on the compute device for the block, back on the CPU after."""
    if not options.offload:
        yield module
        return
    device = options.resolved_device()
    module.to(device)
    try:
        yield module
    finally:
        module.to("cpu")
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
