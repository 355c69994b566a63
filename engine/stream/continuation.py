"""The continuation term: a causal student learns how a stream goes on from ground-truth long clips.

The DMD terms score windows against a bidirectional teacher trained on clips of one length, so
they can teach a stream's first window but not what happens after it: a toyworld mover that
reaches an edge leaves, and the teacher never drew one coming back in (it never saw it), so the
student's objects stop or go and never return (docs/experiments/live-stream.md, sections 2 and 5).
Where the data source has long real clips (toyworld's renderer: movers wrap at the edges, a bounce
keeps bouncing), a stream's later chunks have a ground truth, and this term fits them in the
stream's own setting (teacher forcing on the context, CausVid's and Self-Forcing's baseline):

    the cache holds clip chunks 0 .. j-1, kept exactly as a stream keeps the chunks it made
    (CausalWan.keep: the sink, the recent chunks, the window rolled past the first slots),
    x_s = (1 - s) x_j + s eps at one of the student's levels s, and

    L_cont = mean || x0_theta(x_s, s | cache) - x_j ||^2

the regression of the student's x0 estimate at that level onto the true chunk (the flow-matching
objective written on x0; Lipman et al. 2023). Given its past, a toyworld chunk is nearly
determined (motion goes on at its pace), so its conditional mean is a sharp clip even from pure
noise; the term is not used on the stream's first chunk (j >= 1), whose mean over the world would
be a blur (the DMD terms teach that one). The context is built without a graph: only the chunk
being made learns, as in a stream.
"""

from __future__ import annotations

import torch

from engine.model import add_noise
from engine.stream.causal import CausalWan


def context_cache(causal: CausalWan, clips: torch.Tensor, text: torch.Tensor, upto: int):
    """The cache a stream holds just before making chunk `upto` of `clips` [B, C, T, h, w], had it
    made chunks 0 .. upto-1 exactly (clean, each kept as a stream keeps the chunk it just made)."""
    chunk = causal.window.chunk
    cache, kept = causal.new_cache(), []
    with torch.no_grad():
        for i in range(upto):
            causal.keep(clips[:, :, i * chunk:(i + 1) * chunk], kept, text, cache)
    return cache


def continuation_loss(causal: CausalWan, clips: torch.Tensor, text: torch.Tensor, at: int, sigma: float,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """L_cont (module docstring) for chunk `at` (>= 1) of ground-truth clips [B, C, T, h, w] under
    caption states text [B, L, D], at noise level `sigma` of the student's schedule; (loss, logs)."""
    chunk, count = causal.window.chunk, clips.shape[2] // causal.window.chunk
    if not 1 <= at < count:
        raise ValueError(f"the continuation term fits chunk 1 to {count - 1} of a {count}-chunk clip, got {at}")
    if not 0 < sigma <= 1:
        raise ValueError(f"a noise level in (0, 1], got {sigma}")
    cache = context_cache(causal, clips, text, at)
    target = clips[:, :, at * chunk:(at + 1) * chunk].float()
    eps = torch.randn(target.shape, generator=generator).to(target.device)
    b = target.shape[0]
    x0 = causal.chunk_x0(add_noise(target, eps, torch.full((b,), sigma)), torch.full((b,), sigma), text, cache)
    loss = (x0 - target).pow(2).mean()
    return loss, {"continuation_loss": loss.item(), "continuation_chunk": at, "continuation_level": sigma}
