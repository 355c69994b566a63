"""Speed and memory at real size on a GPU (issue: real checkpoints and the GPU path).

A random-weight Wan2.1-T2V-1.3B-sized transformer and the real-size Wan VAE (speed and memory
do not depend on the weights) at 480x832x81 (latents 16 x 21 x 60 x 104): student 1/3/4 steps
and teacher 50 steps with CFG, denoise-only and end-to-end (text encoding and decode included),
peak memory; then one latent-reward LoRA tune step against one pixel-reward step (gradients
through the VAE decoder), time and peak memory. bf16, SDPA (diffusers' default attention), optional
torch.compile of the repeated blocks. Text encoding (512 tokens; the teacher encodes the negative
prompt too) is timed with a random UMT5-XXL-sized encoder, which is freed before the rest so the
peaks below are the transformer's and the VAE's. Models are built on the device (random init
there takes seconds; on the CPU a 1.3B init takes minutes).

    python bench/gpu.py                                   # on the GPU machine
    python bench/gpu.py --compile --students-only         # the compiled student rows
    python bench/gpu.py --tiny --device cpu               # a smoke run of the same code at toy size
    python bench/gpu.py --estimate-only                   # engine.memory's estimates alone (any machine)
    python bench/gpu.py --stream                          # the causal student streaming, chunk by chunk

`--stream`: the same random transformer run causally (engine/stream) in chunks of 3 latent frames
(12 video frames, as Self-Forcing's), 4 student steps and one cache write per chunk, an attention
window of the first chunk and the 5 before the current one (Self-Forcing's 21 latent frames); each
chunk decoded alone by the Wan VAE. Prints the first chunk's time, the median chunk's once the
window is full, frames per second and the real-time factor at Wan's 16 fps, and the peak memory.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


from engine import schedule
from engine.codec import VideoCodec
from engine.model import FlowModel
from engine.reward.lrm import LatentRewardModel
from engine.sampling import run_to_end, student_sample, teacher_sample

WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)
TINY = dict(WAN_1_3B, num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2, text_dim=64)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)
UMT5_TINY = dict(UMT5_XXL, vocab_size=1000, d_model=64, d_ff=128, num_layers=2, num_heads=2, d_kv=32)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats, warm_up=True):
    if warm_up:
        fn()  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def as_loaded(model, dtype):
    """Cast to `dtype` as diffusers' from_pretrained(torch_dtype=...) does: the modules the class
    keeps in float32 (the Wan transformer's norms, time embedder, RoPE) stay float32."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    model.to(dtype)
    for name, param in model.named_parameters():
        if any(k in name.split(".") for k in keep):
            param.data = param.data.float()
    return model.eval()


def peak_reset(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device):
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy sizes, to smoke-test the script anywhere")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile each transformer block")
    ap.add_argument("--teacher-steps", type=int, default=50)
    ap.add_argument("--students-only", action="store_true", help="only the student rows (e.g. with --compile)")
    ap.add_argument("--estimate-only", action="store_true",
                    help="print engine.memory's decode estimates for models built on the meta device (no compute)")
    ap.add_argument("--stream", action="store_true", help="only the causal student's streaming rows")
    ap.add_argument("--stream-chunks", type=int, default=14, help="chunks streamed with --stream (default 14)")
    ap.add_argument("--tune-only", type=int, nargs="*", metavar="FRAMES",
                    help="only the tune-step rows, at these clip lengths (the pixel step OOMs at 81 frames on 139 GB)")
    args = ap.parse_args()
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    device = torch.device("meta" if args.estimate_only else args.device)
    dtype = torch.bfloat16 if device.type in ("cuda", "meta") else torch.float32
    torch.manual_seed(0)
    cfg = TINY if args.tiny else WAN_1_3B
    skip_text = args.students_only or args.tune_only or args.estimate_only or args.stream
    text_s = {1: 0.0, 2: 0.0} if skip_text else text_encoding(device, dtype, args)
    with torch.device(device):
        transformer = as_loaded(WanTransformer3DModel(**cfg), dtype)
    if args.compile:
        from engine.runtime import compile_blocks

        compile_blocks(transformer)
    vae_cfg = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1) if args.tiny else {}
    with torch.device(device):
        vae = as_loaded(AutoencoderKLWan(**vae_cfg), dtype)
    codec = VideoCodec(vae)
    flow = FlowModel(transformer, codec)
    frames, height, width = (17, 64, 64) if args.tiny else (81, 480, 832)
    if args.estimate_only:
        memory_rows(flow, codec, frames, height, width, device, dtype, args)
        return
    shape = (1, *codec.latent_shape(frames, height, width))
    text = torch.randn(1, 512, cfg["text_dim"], device=device, dtype=dtype)
    uncond = torch.zeros_like(text)
    params = sum(p.numel() for p in transformer.parameters()) / 1e9
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; transformer "
          f"{params:.2f} B params ({dtype}); {frames}x{height}x{width}, latents {tuple(shape[1:])}; "
          f"compile {args.compile}; median of {args.repeats}\n")
    if args.stream:
        stream_rows(transformer, codec, text, device, args)
        return
    if args.tune_only:
        for n in args.tune_only:
            print(f"tune step at {n}x{height}x{width}:")
            tune_steps(flow, codec, (1, *codec.latent_shape(n, height, width)), text, device, args)
        return
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    with torch.no_grad():
        decode_s, _ = timed(lambda: codec.decode(torch.randn(shape, device=device)), device, args.repeats)
        for steps in (1, 3, 4):
            sigmas = schedule.student_sigmas(schedule.default_student_timesteps(steps), 8.0 if steps == 3 else 5.0)
            peak_reset(device)
            s, _ = timed(lambda: run_to_end(student_sample(flow, noise, sigmas, text, torch.Generator().manual_seed(0))),
                         device, args.repeats)
            rows.append((f"student {steps} step{'s' * (steps > 1)}", steps, s, peak_gb(device), text_s[1]))
        if not args.students_only:  # the students warmed the model up: one timed teacher run
            sigmas = schedule.teacher_sigmas(args.teacher_steps, 5.0)
            peak_reset(device)
            s, _ = timed(lambda: run_to_end(teacher_sample(flow, noise, sigmas, text, uncond, 5.0)), device, 1,
                         warm_up=False)
            rows.append((f"teacher {args.teacher_steps} steps CFG", 2 * args.teacher_steps, s, peak_gb(device),
                         text_s[2]))
    teacher = rows[-1]
    print("| sampler | NFE | denoise s | end-to-end s (text + denoise + decode) | peak GB | denoise speed-up | "
          "end-to-end speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, nfe, s, peak, text_time in rows:
        end, teacher_end = text_time + s + decode_s, teacher[4] + teacher[2] + decode_s
        ups = ("-", "-") if args.students_only else (f"{teacher[2] / s:.1f}x", f"{teacher_end / end:.1f}x")
        print(f"| {name} | {nfe} | {s:.3f} | {end:.3f} | {peak:.1f} | {ups[0]} | {ups[1]} |")
    print(f"\nVAE decode alone: {decode_s:.3f} s; text encoding {text_s[1]:.3f} s (1 prompt), "
          f"{text_s[2]:.3f} s (prompt + negative)\n")
    if args.students_only:
        return
    memory_rows(flow, codec, frames, height, width, device, dtype, args)
    tune_steps(flow, codec, shape, text, device, args)


def stream_rows(transformer, codec, text, device, args, fps: int = 16) -> None:
    """The causal student streaming (see the module's docstring): per-chunk times, FPS, memory."""
    from engine.stream.cache import Window
    from engine.stream.causal import CausalWan
    from engine.stream.sampler import stream_chunks

    window = Window(chunk=3, sink=1, recent=5)
    causal = CausalWan(transformer, window)
    sigmas = schedule.student_sigmas(schedule.default_student_timesteps(4), 5.0).tolist()
    c, _, h, w = codec.latent_shape(81, *((64, 64) if args.tiny else (480, 832)))
    peak_reset(device)
    made, decoded, frames = [], [], 0
    sync(device)
    start = last = time.perf_counter()
    first = None
    for _, x0 in stream_chunks(causal, sigmas, lambda i: text, (c, h, w), torch.Generator().manual_seed(0),
                               args.stream_chunks):
        sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            out = codec.decode(x0)
        sync(device)
        done = time.perf_counter()
        made.append(t - last)
        decoded.append(done - t)
        frames += out.shape[1]
        first = done - start if first is None else first
        last = time.perf_counter()
    steady = slice(window.slots, None) if len(made) > window.slots else slice(None)
    chunk_s = statistics.median(m + d for m, d in zip(made[steady], decoded[steady]))
    per_chunk = frames / len(made)
    print(f"causal student, chunks of {window.chunk} latent frames ({per_chunk:.0f} video frames), 4 steps + 1 cache "
          f"write each, window sink {window.sink} + {window.recent} recent chunks; {len(made)} chunks\n")
    print("| first chunk s | median chunk s (window full) | of which decode s | frames per second | "
          "real-time factor at 16 fps | peak GB |\n|---|---|---|---|---|---|")
    print(f"| {first:.3f} | {chunk_s:.3f} | {statistics.median(decoded[steady]):.3f} | {per_chunk / chunk_s:.1f} | "
          f"{per_chunk / fps / chunk_s:.2f} | {peak_gb(device):.1f} |")


def text_encoding(device, dtype, args) -> dict[int, float]:
    """Median seconds to encode 1 and 2 prompts of 512 tokens with a random UMT5-XXL-sized encoder
    (Wan2.1's text encoder), which is freed afterwards."""
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device(device):
        encoder = UMT5EncoderModel(UMT5Config(**(UMT5_TINY if args.tiny else UMT5_XXL))).to(dtype).eval()
    params = sum(p.numel() for p in encoder.parameters()) / 1e9
    out = {}
    with torch.no_grad():
        for batch in (1, 2):
            ids = torch.randint(0, encoder.config.vocab_size, (batch, 512), device=device)
            out[batch], _ = timed(lambda: encoder(input_ids=ids).last_hidden_state, device, args.repeats)
    print(f"text encoder: {params:.2f} B params ({dtype}), freed before the rows below")
    del encoder
    peak_reset(device)
    return out


def memory_rows(flow, codec, frames, height, width, device, dtype, args) -> None:
    """engine.memory's estimate next to the measured peak: 3-step student, decode with and without tiling."""
    from types import SimpleNamespace

    from engine import memory
    from engine.runtime import RuntimeOptions

    loaded = SimpleNamespace(student=lambda n: (flow, schedule.default_student_timesteps(n)), teacher=flow,
                             codec=codec, text=SimpleNamespace(encoder=None))
    settings = {"role": "student", "steps": 3, "frames": frames, "height": height, "width": width}
    name = "bfloat16" if dtype == torch.bfloat16 else "float32"
    latents = torch.randn((1, *codec.latent_shape(frames, height, width)), device=device)
    print("| decode | estimated peak GB | measured peak GB | time s |\n|---|---|---|---|")
    for tiling in (False, True):
        if tiling:
            codec.vae.enable_tiling()
        est = memory.estimate(loaded, settings, RuntimeOptions(dtype=name, vae_tiling=tiling))
        if device.type == "meta":
            print(f"| {'tiled' if tiling else 'whole'} | {est.peak / 2**30:.2f} | - | - |")
            continue
        peak_reset(device)
        try:
            with torch.no_grad():
                s, _ = timed(lambda: codec.decode(latents), device, 1)
            measured = peak_gb(device)
        except torch.cuda.OutOfMemoryError:
            s, measured = float("nan"), float("inf")
        print(f"| {'tiled' if tiling else 'whole'} | {est.peak / 2**30:.1f} | {measured:.1f} | {s:.3f} |")
    codec.vae.disable_tiling()
    print()


def tune_steps(flow, codec, shape, text, device, args) -> None:
    """One latent-reward LoRA step vs one pixel-reward step through the decoder: time and memory."""
    from peft import LoraConfig

    transformer = flow.transformer
    transformer.requires_grad_(False)
    if "default" not in (getattr(transformer, "peft_config", None) or {}):
        transformer.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    transformer.train()
    if hasattr(transformer, "enable_gradient_checkpointing"):
        transformer.enable_gradient_checkpointing()
    lrm = LatentRewardModel(shape[1], 128, text.shape[-1]).to(device)
    x_t = torch.randn(shape, device=device)
    sigma = torch.full((1,), 0.7, device=device)
    results = []
    for variant in ("latent reward (LRM)", "pixel reward through the VAE decoder"):
        peak_reset(device)
        try:
            sync(device)
            t = time.perf_counter()
            x = flow.predict_x0(x_t, sigma, text)
            if variant.startswith("latent"):
                loss = -lrm(x, text.float()).mean()
            else:
                pixels = codec.decode_float(x)
                loss = -pixels.std()  # a differentiable pixel reward (contrast)
            loss.backward()
            sync(device)
            results.append((variant, time.perf_counter() - t, peak_gb(device)))
        except torch.cuda.OutOfMemoryError:
            results.append((variant, float("nan"), float("inf")))
        x = loss = pixels = None  # drop this step's tensors before reading what is still allocated
        transformer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            print(f"  after the {variant} step: {torch.cuda.memory_allocated() / 2**30:.1f} GB still allocated")
    print("| tune step | time s | peak GB | memory vs pixel step |\n|---|---|---|---|")
    for variant, s, peak in results:
        ratio = peak / results[1][2] if results[1][2] not in (0, float("inf")) else float("nan")
        print(f"| {variant} | {s:.3f} | {'OOM' if peak == float('inf') else f'{peak:.1f}'} | {ratio:.3f}x |")


if __name__ == "__main__":
    main()
