"""The causal student's training rollout (Self-Forcing, Huang et al. 2025): a clip made the way a
stream makes it, so training sees the student's own context, not the teacher's. A rollout
may run past the window (more chunks than its slots), so the chunks at its end are made over a
rolled cache (the sink and recent chunks, the oldest gone), as every chunk of a long stream is
(Self-Forcing++ and LongLive train on such rollouts); the trainer scores its last window.

Chunk after chunk, each from its slice of the given noise: the student's steps over the cache of
the chunks this rollout already made, stopped at step `exit_step` (the same for every chunk of
one rollout; the trainer draws it), whose x0 estimate is the chunk. Only that last forward keeps
its graph, the earlier steps run without one (Self-Forcing's gradient truncation), and the chunk
joins the cache clean and detached, so memory grows with one forward per chunk, not with the
number of steps. The clip is the chunks side by side: the generator sample that the DMD terms
(engine/distill/dmd.py) and the regression to teacher ODE pairs score.
"""

from __future__ import annotations

import torch

from engine.model import add_noise
from engine.sampling import noise_like
from engine.stream.causal import CausalWan


def rollout(causal: CausalWan, noise: torch.Tensor, sigmas: list[float], text: torch.Tensor, exit_step: int,
            generator: torch.Generator, grad_chunks: int | None = None,
            switch: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """x0 [B, C, T, h, w] (float32, with gradient through each chunk's last forward) from noise
    [B, C, T, h, w], T a multiple of the window's chunk; text [B, L, D] for every chunk. With
    `grad_chunks`, only the last that many chunks keep a graph (the ones a loss will score). With
    `switch` (chunk index, new text [B, L, D]) the prompt changes at that chunk, the cache
    rebuilt under the new one, as a stream does (engine/stream/sampler.py)."""
    chunk, frames = causal.window.chunk, noise.shape[2]
    if frames % chunk:
        raise ValueError(f"a rollout has a multiple of {chunk} latent frames, got {frames}")
    if not 0 <= exit_step < len(sigmas):
        raise ValueError(f"exit step {exit_step} is outside the student's {len(sigmas)} steps")
    b, cache, made, kept, count = noise.shape[0], causal.new_cache(), [], [], frames // chunk
    if switch is not None and not 0 < switch[0] < count:
        raise ValueError(f"a rollout of {count} chunks switches its prompt at chunk 1 to {count - 1}, got {switch[0]}")
    for i in range(count):
        if switch is not None and i == switch[0]:
            text = switch[1]
            with torch.no_grad():
                cache = causal.rebuild(kept, text)
        graph = grad_chunks is None or i >= count - grad_chunks
        x = add_noise(torch.zeros_like(noise[:, :, :chunk]), noise[:, :, i * chunk:(i + 1) * chunk], sigmas[0])
        with torch.no_grad():
            for k in range(exit_step):
                x0 = causal.chunk_x0(x, torch.full((b,), sigmas[k]), text, cache)
                x = add_noise(x0, noise_like(tuple(x0.shape), generator, x0.device), sigmas[k + 1])
        with torch.set_grad_enabled(graph and torch.is_grad_enabled()):
            x0 = causal.chunk_x0(x, torch.full((b,), sigmas[exit_step]), text, cache)
        with torch.no_grad():
            causal.keep(x0.detach(), kept, text, cache)
        made.append(x0)
    return torch.cat(made, dim=2)
