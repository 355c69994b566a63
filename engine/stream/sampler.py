"""The stream's sampler: chunk after chunk, each made in a few student steps and then cached.

For chunk i: draw noise, run the student's step list on it (predict x0, re-noise to the next
level, as `engine.sampling.student_sample` does for a whole clip) with self-attention over the
cached chunks, then run the clean chunk once at noise level 0 to write its keys and values into
the cache (engine/stream/causal.py). The prompt's text states are asked for each chunk, so a new
prompt applies from the next chunk. All noise comes from the passed CPU generator: the same seed,
prompts and switches give the same stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from engine.model import add_noise
from engine.sampling import noise_like
from engine.stream.causal import CausalWan


def stream_chunks(causal: CausalWan, sigmas: list[float], text_for: Callable[[int], torch.Tensor],
                  latent_shape: tuple[int, int, int], generator: torch.Generator, chunks: int | None = None,
                  stop: Callable[[], bool] = lambda: False, batch: int = 1,
                  recache: bool = True) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (index, clean latents [batch, C, chunk, h, w]) for chunk 0, 1, ... until `chunks` are
    made (None: until `stop()` says so, asked before each chunk). `latent_shape` is (C, h, w);
    `text_for(i)` gives chunk i's text states [batch, L, D] (`batch` streams made side by side, as
    a benchmark makes many).

    With `recache`, a new prompt rebuilds the cache: the kept clean chunks are run again under the
    new text and their keys and values replace the old ones (LongLive's KV re-cache). A cached
    chunk's keys and values past the first block carry the prompt it was made under (through
    cross-attention), so without it the old prompt keeps steering the scene from the cache."""
    if not sigmas or any(not 0.0 < s <= 1.0 for s in sigmas):
        raise ValueError(f"a stream's student levels must lie in (0, 1], got {sigmas}")
    if chunks is not None and chunks < 1:
        raise ValueError(f"a stream needs at least one chunk, got {chunks}")
    cache, channels, (h, w) = causal.new_cache(), latent_shape[0], latent_shape[1:]
    if batch < 1:
        raise ValueError(f"a stream batch holds at least one stream, got {batch}")
    shape = (batch, channels, causal.window.chunk, h, w)
    index, kept, last_text = 0, [], None  # kept: the clean chunks the cache holds, in slot order
    with torch.no_grad():
        while (chunks is None or index < chunks) and not stop():
            text = text_for(index)
            if recache and kept and not torch.equal(text, last_text):
                cache = causal.rebuild(kept, text)
            last_text = text
            x = add_noise(torch.zeros(shape, device=causal.device), noise_like(shape, generator, causal.device), sigmas[0])
            for k, s in enumerate(sigmas):
                x0 = causal.chunk_x0(x, torch.full((batch,), s), text, cache)
                if k + 1 < len(sigmas):
                    x = add_noise(x0, noise_like(shape, generator, x0.device), sigmas[k + 1])
            causal.keep(x0, kept, text, cache)
            yield index, x0
            index += 1
