"""Playing a stream: a request in, decoded chunks out, with the timings a viewer feels.

`StreamRequest` is what a user asks (a prompt, optional prompt switches at given seconds, a
length or none for "until stopped", a seed); `play` loads nothing, it takes the loaded model's
causal student (`LoadedModel.stream`) and yields a `StreamChunk` per chunk: its frames, the
prompt it was made under, and how long making and decoding it took. `summary` turns the chunks'
timings into the numbers the CLI reports: `first_chunk_s` (play pressed to the first decoded
chunk), the median `chunk_s` (make + decode), and `realtime_factor` (seconds of video made per
second of wall time).

toyworld's VAE is per frame, so each chunk decodes alone exactly. Wan's causal 3D VAE decodes a
chunk alone here too (a seam may show at chunk borders; decoding through its feature cache across
chunks is not built yet).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch

from engine import schedule
from engine.events import StreamChunk
from engine.requests import StreamRequest
from engine.stream.cache import Window
from engine.stream.causal import CausalWan
from engine.stream.sampler import stream_chunks

if TYPE_CHECKING:
    from engine.loading import LoadedModel

def causal_student(loaded: LoadedModel) -> tuple[CausalWan, list[int]]:
    """The loaded model's causal student, run causally in its window, and its step list."""
    if loaded.stream is None:
        raise ValueError(f"model {loaded.info.name!r} has no causal student to stream with; distil one with "
                         f"`rushes distill-stream --model {loaded.info.name} --out DIR`")
    network, entry = loaded.stream
    return CausalWan(network, Window(entry["chunk"], entry["sink"], entry["recent"],
                                       entry.get("retime", False))), list(entry["timesteps"])


def play(loaded: LoadedModel, req: StreamRequest, stop: Callable[[], bool] = lambda: False,
         prompt_now: Callable[[], str | None] | None = None) -> Iterator[StreamChunk]:
    """Yield the stream's chunks until its length is made or `stop()` says so. `prompt_now()`
    (the studio's live prompt box) overrides the request's prompts from the next chunk on."""
    began = time.perf_counter()
    causal, timesteps = causal_student(loaded)
    info, fps = loaded.info, loaded.info.fps
    c, _, h, w = loaded.codec.latent_shape(info.frames, info.height, info.width)
    frames_per_chunk = causal.window.chunk * (loaded.codec.temporal if loaded.codec.is_wan else 1)
    chunks = None if req.seconds is None else math.ceil(req.seconds * fps / frames_per_chunk)
    sigmas = schedule.student_sigmas(timesteps, info.shift).tolist()
    encoded: dict[str, torch.Tensor] = {}
    current = [req.prompt]  # the prompt the chunk being made is under (an endless stream keeps no list)

    def text_for(i: int) -> torch.Tensor:
        live = prompt_now() if prompt_now is not None else None
        prompt = live or req.prompt_at(i * frames_per_chunk / fps)
        current[0] = prompt
        if prompt not in encoded:
            encoded[prompt] = loaded.text.encode([prompt]).to(causal.dtype)
        return encoded[prompt]

    window = causal.window
    meta = {"timesteps": timesteps, "fps": fps,
            "window": {"chunk": window.chunk, "sink": window.sink, "recent": window.recent}}
    generator = torch.Generator().manual_seed(req.seed)
    last = time.perf_counter()
    for index, latents in stream_chunks(causal, sigmas, text_for, (c, h, w), generator, chunks, stop):
        made = time.perf_counter()
        frames = loaded.codec.decode(latents)[0]
        done = time.perf_counter()
        if req.seconds is not None and index == chunks - 1:  # the last chunk cut to the asked length
            frames = frames[:max(1, round(req.seconds * fps) - index * frames_per_chunk)]
        yield StreamChunk(index, frames, current[0], index * frames_per_chunk / fps, made - last, done - made,
                          done - began, meta)
        if req.pace is not None:  # the next chunk starts no earlier than `pace` seconds before it plays
            start_next = (index + 1) * frames_per_chunk / fps - req.pace
            while time.perf_counter() - began < start_next and not stop():
                time.sleep(min(0.05, start_next - (time.perf_counter() - began)))
        last = time.perf_counter()


def summary(chunks: list[StreamChunk], fps: int) -> dict:
    """The numbers of a finished stream (see the module's docstring)."""
    if not chunks:
        raise ValueError("a stream with no chunks has no timings")
    frames = sum(len(c.frames) for c in chunks)
    wall = chunks[-1].since_play_s
    per_chunk = [c.made_s + c.decode_s for c in chunks]
    return {"frames": frames, "fps": fps, "chunks": len(chunks), "seconds": frames / fps,
            "first_chunk_s": round(chunks[0].since_play_s, 4), "chunk_s": round(statistics.median(per_chunk), 4),
            "realtime_factor": round(frames / fps / wall, 3) if wall > 0 else None,
            "prompts": list(dict.fromkeys(c.prompt for c in chunks))}
