"""Block-causal attention for any diffusers `WanTransformer3DModel`, chunk by chunk with a KV
cache or over a whole clip with a block-causal mask.

Nothing of the network changes: for the length of a call each block's self-attention processor
is swapped for `CausalSelfAttention`, so patch embedding, time and text conditioning, cross-
attention, feed-forward, LoRA layers and the output head are the network's own. Only
self-attention differs:

- `chunk` mode (a stream): the tokens of one chunk attend to each other and to the cached keys
  and values of the clean chunks in view (cache.py: the sink and the most recent), RoPE applied
  by slot. With `write`, the chunk's own keys and values join the cache: a stream runs the chunk
  once more at noise level 0 after denoising it (Self-Forcing and CausVid keep the clean chunk,
  not a noisy step, as the next chunks' context).
- `mask` mode (training on whole clips, e.g. regression on teacher ODE pairs, CausVid's
  initialisation): all tokens at once, each chunk seeing itself and the chunks before it. For a
  clip no longer than the window this computes exactly what the chunk mode computes chunk by
  chunk (tests/test_stream.py).

Cross-attention to the prompt is per call, so a new prompt steers from the next chunk while the
cache keeps what was made before it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.model import frame_context, network_inputs, x0_from_velocity
from engine.stream.cache import KVCache, Window, rope_tables, rotate


@dataclass
class _Pass:
    """What every block's processor reads during one forward pass."""

    mode: str  # "chunk" or "mask"
    cache: KVCache | None = None
    write: bool = False
    rope_query: tuple[torch.Tensor, torch.Tensor] | None = None  # chunk mode: the chunk's tokens
    rope_context: tuple[torch.Tensor, torch.Tensor] | None = None  # chunk mode: the kept chunks' tokens
    mask: torch.Tensor | None = None  # mask mode: [tokens, tokens] bool, True where attention is allowed
    seen: list[int] = field(default_factory=list)


class CausalSelfAttention:
    """A Wan self-attention processor (see the module's docstring); `block` is the block's index."""

    def __init__(self, state: _Pass, block: int):
        self.state, self.block = state, block

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None,
                 **kwargs):
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))  # [B, n, H, d]
        state = self.state
        if state.mode == "mask":
            query, keys = rotate(query, *rotary_emb), rotate(key, *rotary_emb)
            values, mask = value, state.mask
        else:
            context = state.cache.context(self.block)
            if state.write:
                state.cache.append(self.block, key, value)
            query = rotate(query, *state.rope_query)
            own = rotate(key, *state.rope_query)
            if context is None:
                keys, values = own, value
            else:
                past = rotate(context[0].to(key.dtype), *state.rope_context)
                keys, values = torch.cat([past, own], dim=1), torch.cat([context[1].to(value.dtype), value], dim=1)
            mask = None
        out = F.scaled_dot_product_attention(query.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
                                             attn_mask=mask)
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


@contextmanager
def _causal(transformer, state: _Pass):
    """Every block's self-attention made causal for the length of the `with`."""
    network = getattr(transformer, "module", transformer)
    blocks = list(network.blocks)
    originals = [b.attn1.get_processor() for b in blocks]
    for i, b in enumerate(blocks):
        b.attn1.set_processor(CausalSelfAttention(state, i))
    try:
        yield
    finally:
        for b, p in zip(blocks, originals):
            b.attn1.set_processor(p)


def block_causal_mask(chunks: int, tokens_per_chunk: int, device=None) -> torch.Tensor:
    """[n, n] bool over chunks x tokens_per_chunk tokens: True where a token's chunk is at or
    after the other token's chunk."""
    chunk_of = torch.arange(chunks, device=device).repeat_interleave(tokens_per_chunk)
    return chunk_of[:, None] >= chunk_of[None, :]


class CausalWan:
    """A Wan transformer run causally over chunks of `window.chunk` latent frames."""

    def __init__(self, transformer, window: Window):
        network = getattr(transformer, "module", transformer)
        patch = tuple(network.config.patch_size)
        if patch[0] != 1:
            raise ValueError(f"causal streaming needs a temporal patch size of 1, the transformer has {patch}")
        if frame_context(transformer):
            raise ValueError("a network that reads neighbouring frames (rushes_frame_context > 0) sees the future; "
                             "it cannot stream")
        self.transformer, self.network, self.window, self.patch = transformer, network, window, patch

    @property
    def device(self) -> torch.device:
        return self.network.patch_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.patch_embedding.weight.dtype

    def new_cache(self) -> KVCache:
        return KVCache(self.window, len(self.network.blocks))

    def _grid(self, x: torch.Tensor) -> tuple[int, int]:
        return x.shape[-2] // self.patch[1], x.shape[-1] // self.patch[2]

    def _run(self, x_in: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, state: _Pass) -> torch.Tensor:
        with _causal(self.transformer, state):
            out = self.transformer(hidden_states=x_in.to(self.device, self.dtype),
                                   timestep=(sigma * 1000).to(self.device, torch.float32),
                                   encoder_hidden_states=text.to(self.device, self.dtype), return_dict=False)[0]
        return out.float()

    def chunk_velocity(self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, cache: KVCache,
                       write: bool = False) -> torch.Tensor:
        """v prediction (float32) for one chunk x [B, C, chunk, h, w] at noise level sigma [B],
        seeing the cache's kept chunks; with `write`, x (clean, sigma 0) joins the cache."""
        if x.shape[2] != self.window.chunk:
            raise ValueError(f"a chunk has {self.window.chunk} latent frames, got {x.shape[2]}")
        slot, height, width = cache.kept, *self._grid(x)
        rope = self.network.rope
        query = tuple(t.to(self.device) for t in rope_tables(rope, self.window.frame_positions([slot]), height, width))
        context = (tuple(t.to(self.device) for t in rope_tables(rope, self.window.frame_positions(range(slot)),
                                                                height, width)) if slot else None)
        state = _Pass("chunk", cache=cache, write=write, rope_query=query, rope_context=context)
        x_in = network_inputs(x, self.transformer, frame_times=self.window.frame_times(slot))
        return self._run(x_in, sigma, text, state)

    def keep(self, x0: torch.Tensor, kept: list[torch.Tensor], text: torch.Tensor, cache: KVCache) -> None:
        """A clean chunk x0 [B, C, chunk, h, w] just made joins the stream's context: `kept` (the
        clean chunks the cache holds, in slot order) and the cache, the oldest chunk after the sink
        leaving both past the window. With the window's `retime`, a chunk made in the last slot
        rolls the window: the recent chunks are written again at their new slots (cache.py)."""
        window = self.window
        rolled = cache.kept == window.sink + window.recent
        kept.append(x0)
        if len(kept) > window.sink + window.recent:
            del kept[window.sink]
        if window.retime and rolled and window.recent:
            cache.truncate(window.sink)
            self._write(kept[window.sink:], text, cache)
        else:
            self._write([x0], text, cache)

    def rebuild(self, kept: list[torch.Tensor], text: torch.Tensor) -> KVCache:
        """A new cache holding the kept clean chunks (in slot order) written again under `text`:
        LongLive's KV re-cache on a prompt switch. A cached chunk's keys and values past the first
        block carry the prompt it was made under (through cross-attention)."""
        cache = self.new_cache()
        self._write(kept, text, cache)
        return cache

    def _write(self, chunks: list[torch.Tensor], text: torch.Tensor, cache: KVCache) -> None:
        """Clean chunks run at noise level 0, in order, each joining the cache in the next slot."""
        for latents in chunks:
            self.chunk_velocity(latents, torch.zeros(latents.shape[0]), text, cache, write=True)

    def clip_velocity(self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """v prediction (float32) for a whole clip x [B, C, T, h, w] (T a multiple of the chunk,
        at most the window's frames), every chunk seeing itself and the chunks before it; sigma
        [B] is one noise level per clip."""
        frames = x.shape[2]
        if frames % self.window.chunk or frames > self.window.frames:
            raise ValueError(f"a causal clip has a multiple of {self.window.chunk} latent frames up to "
                             f"{self.window.frames}, got {frames}")
        chunks, (height, width) = frames // self.window.chunk, self._grid(x)
        mask = block_causal_mask(chunks, self.window.chunk * height * width, self.device)
        times = torch.cat([self.window.frame_times(s) for s in range(chunks)])
        return self._run(network_inputs(x, self.transformer, frame_times=times), sigma, text, _Pass("mask", mask=mask))

    def chunk_x0(self, x_t: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """x0 estimate (float32) of a noisy chunk."""
        v = self.chunk_velocity(x_t, sigma, text, cache)
        return x0_from_velocity(x_t.float(), v, sigma.to(v.device, torch.float32))
