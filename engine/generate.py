"""Generation: a `GenerateRequest` in, a generator of typed events out, ending in a `Clip`.

Steps, as a diffusers pipeline's `__call__` reads: (1) check inputs, (2) load the model,
(3) encode the prompt(s), (4) draw the noise, (5) denoise with the role's sampler, checking
the cancel flag between steps, (6) decode. Timings are split per stage and the network
evaluations (NFE, CFG passes counted) are reported with the clip.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from engine import adapters, loading, memory, runtime, schedule
from engine.events import Failed, Preview, Progress, Result
from engine.knobs import MAX_SEED
from engine.model import check_positions
from engine.requests import GenerateRequest
from engine.sampling import frame_shared_noise, noise_like, student_sample, teacher_sample


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: int
    meta: dict  # every setting used, the seed, timestep list, nfe and timings
    latents: torch.Tensor | None = None  # final latents [1, C, T', h, w] on the CPU (a latent reward scores them)


class Cancelled(Exception):
    pass


def precheck(req: GenerateRequest) -> GenerateRequest:
    """Refuse what the request's values and the model folder's facts alone can refuse (a bad
    value, a step count the model has no student for, a clip over the model's limits), before any
    weights load; `Engine.settings` checks the same again against the loaded model."""
    req.validate()
    try:
        info, students = loading.model_facts(req.model)
    except (ValueError, FileNotFoundError, OSError):
        return req  # not a readable folder or preset (a hub name, say): the load will say what is wrong
    role = req.role if req.role != "auto" else ("student" if students else "teacher")
    if role == "student" and req.steps is not None and req.steps not in students:
        raise ValueError(f"model {info.name!r} has no {req.steps}-step student (has: {students or 'none'})")
    check_fits(info, role, req.frames, req.height, req.width)
    return req


def check_fits(info: loading.ModelInfo, role: str, frames: int | None, height: int | None, width: int | None) -> None:
    """The model's own limits (its role, clip length and side); ValueError naming the value."""
    if role == "teacher" and info.kind == "student":
        raise ValueError(f"model {info.name!r} is a distilled student; use its teacher model for role teacher")
    for name, value, limit in (("frames", frames, info.max_frames), ("height", height, info.max_side),
                               ("width", width, info.max_side)):
        if value is not None and value > limit:
            raise ValueError(f"{name} must be <= {limit} for {info.name}, got {value}")


class Engine:
    """Holds loaded models (never module globals) and turns requests into clips."""

    def __init__(self, options: runtime.RuntimeOptions | None = None):
        self.options = options = options or runtime.RuntimeOptions()
        self.device = options.resolved_device()
        self._models: dict[str, loading.LoadedModel] = {}
        self._lock = threading.Lock()

    def call(self, fn: Callable, *args, **kwargs):
        """fn(self, *args, **kwargs): the call an `engine.worker.EngineProcess` makes in its worker,
        so the studio's code runs the same on either."""
        return fn(self, *args, **kwargs)

    def model(self, name: str) -> loading.LoadedModel:
        """Load a model once and keep it (set up for this engine's runtime options)."""
        key = str(name)
        with self._lock:
            if key not in self._models:
                opts = self.options
                loaded = loading.load(name, opts.load_device, opts.torch_dtype, opts.torch_decode_dtype)
                runtime.apply(loaded, opts)
                self._models[key] = loaded
            return self._models[key]

    def preload(self, name: str) -> None:
        """Nothing: an in-process engine loads on its first request. (`engine.worker.EngineProcess`
        loads in its worker while the studio's page is built.)"""

    def estimate(self, req: GenerateRequest) -> tuple[memory.MemoryEstimate, int | None]:
        """Peak-memory estimate for a request and the device's free memory (ValueError on bad input)."""
        req.validate()
        loaded = self.model(req.model)
        return memory.estimate(loaded, self.settings(req, loaded), self.options), memory.free_bytes(self.device)

    def settings(self, req: GenerateRequest, loaded: loading.LoadedModel) -> dict:
        """Concrete settings for a request: model defaults filled in, model limits checked."""
        info = loaded.info
        role = req.role if req.role != "auto" else ("student" if loaded.students else "teacher")
        s = {
            "prompt": req.prompt, "negative": req.negative, "model": info.name, "model_ref": str(req.model),
            "role": role,
            "frames": req.frames or info.frames, "height": req.height or info.height,
            "width": req.width or info.width, "seed": req.seed, "lora": req.lora,
            "lora_scale": req.lora_scale if req.lora else None, "solver": None, "guidance": None,
        }
        if s["seed"] is None:
            s["seed"] = random.randint(0, MAX_SEED)
        check_fits(info, role, s["frames"], s["height"], s["width"])
        loaded.codec.check_frames(s["frames"])
        if role == "student":
            steps = req.steps or loaded.default_student_steps()
            flow, timesteps = loaded.student(steps)
            s.update(steps=steps, timesteps=timesteps)
            share = loaded.noise_frame_share(steps)
            if share:  # recorded only when on: iid students' settings read as before
                s["noise_frame_share"] = share
        else:
            steps = req.steps or info.teacher_steps
            guidance = info.guidance if req.guidance is None else req.guidance
            flow = loaded.teacher
            s.update(steps=steps, guidance=guidance, solver=req.solver or info.solver)
        size = s["frames"], s["height"], s["width"]
        check_positions(flow.transformer, loaded.codec.latent_shape(*size), *size)
        return s

    def generate(self, req: GenerateRequest, cancel: threading.Event | None = None) -> Iterator:
        """Yield Progress / Preview events and finally Result(Clip) or Failed(message), on the
        caller's thread; `cancel` is checked between steps."""
        yield from self._events(req, cancel or threading.Event())

    def stream(self, req, cancel: threading.Event | None = None, prompt_now=None) -> Iterator:
        """A stream's chunks (engine/stream/play.py) until its length is made or `cancel` is set;
        Failed(message) for a bad request or a model that cannot stream."""
        from engine.stream.play import play

        cancel = cancel or threading.Event()
        try:
            req = req.validate()
            yield from play(self.model(req.model), req, cancel.is_set, prompt_now)
        except (ValueError, FileNotFoundError) as err:
            yield Failed(str(err))

    def _events(self, req: GenerateRequest, cancel) -> Iterator:
        try:
            yield from self._generate(req, cancel)
        except Cancelled:
            yield Failed("cancelled", kind="cancelled")
        except (ValueError, FileNotFoundError) as err:
            yield Failed(str(err))
        except (RuntimeError, MemoryError) as err:
            if not memory.is_out_of_memory(err):
                raise
            memory.release(self.device)
            loaded = self.model(req.model)
            est, free = self.estimate(req)
            yield Failed(memory.oom_message(self.settings(req, loaded), est.describe(free), self.device), kind="oom")

    def _now(self) -> float:
        """A timestamp after the device's queued work is done (CUDA runs asynchronously: without the
        sync a stage's time would land in the next one's)."""
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _generate(self, req: GenerateRequest, cancel) -> Iterator:
        t0 = self._now()
        precheck(req)  # 1. check inputs before any compute or load
        loaded = self.model(req.model)  # 2. model (cached after the first request)
        s = self.settings(req, loaded)
        student = s["role"] == "student"
        flow = loaded.student(s["steps"])[0] if student else loaded.teacher
        opts, device = self.options, self.device
        with adapters.applied(flow.transformer, req.lora, req.lora_scale):
            t_text = self._now()  # 3. text
            with runtime.placed(loaded.text.encoder, opts):
                text = loaded.text.encode([req.prompt]).to(device)
                uncond = None if student else loaded.text.encode([req.negative]).to(device)
            with runtime.placed(flow.transformer, opts):  # previews decode wherever the VAE sits
                t_denoise = self._now()
                generator = torch.Generator().manual_seed(s["seed"])  # 4. noise
                shape = (1, *loaded.codec.latent_shape(s["frames"], s["height"], s["width"]))
                noise = noise_like(shape, generator, device)
                if student:  # the student's own starting noise (frames share part of it)
                    noise = frame_shared_noise(noise, s.get("noise_frame_share", 0.0), generator)
                nfe0 = flow.nfe
                if student:  # 5. denoise
                    sigmas = schedule.student_sigmas(s["timesteps"], loaded.info.shift)
                    steps = student_sample(flow, noise, sigmas, text, generator)
                else:
                    sigmas = schedule.teacher_sigmas(s["steps"], loaded.info.shift)
                    steps = teacher_sample(flow, noise, sigmas, text, uncond, s["guidance"], s["solver"],
                                           loaded.info.shift)
                latents = yield from self._drive(steps, s["steps"], loaded, req.preview, cancel)
                t_decode = self._now()
            with runtime.placed(loaded.codec.vae, opts):
                frames = loaded.codec.decode(latents)[0]  # 6. decode
            t_end = self._now()
        s["nfe"] = flow.nfe - nfe0
        s["timings"] = {"text_encode_s": t_denoise - t_text, "denoise_s": t_decode - t_denoise,
                        "decode_s": t_end - t_decode, "total_s": t_end - t0}
        s["fps"] = loaded.info.fps
        s["runtime"] = opts.describe()
        yield Result(Clip(frames, loaded.info.fps, s, latents.detach().cpu()))

    def _drive(self, steps, total: int, loaded, preview: bool, cancel):
        """Run a sampler generator, yielding events between steps; returns the latents."""
        while True:
            if cancel.is_set():
                raise Cancelled()
            try:
                with torch.no_grad():  # grad mode is per thread: the studio's worker threads have it on
                    i, x0 = next(steps)
            except StopIteration as stop:
                return stop.value
            yield Progress(stage="denoise", step=i + 1, total=total)
            if preview and _preview_due(i, total):
                yield Preview(i + 1, total, loaded.codec.decode(x0[:, :, ::4])[0])


def _preview_due(i: int, total: int, most: int = 4) -> bool:
    """At most `most` previews per clip, the last step always among them."""
    every = max(1, total // most)
    return (i + 1) % every == 0 or i + 1 == total
