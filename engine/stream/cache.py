"""The attention window of a stream and the KV cache that holds it.

A stream is made in chunks of `chunk` latent frames. Each chunk attends to itself (both ways) and
to a bounded context of earlier, clean chunks: the first `sink` chunks of the stream, kept for
its whole length (an attention sink, as MotionStream and Reward Forcing keep one), and the
`recent` chunks before it (a rolling window). So memory and the cost of a chunk stay flat however
long the stream runs.

Positions are given by slot, not by time since the stream began: the kept chunks sit in slots
0, 1, ... in stream order and the chunk being made in the next one, so a stream never runs past
the positions a network was trained on (Wan's 3D RoPE holds `rope_max_seq_len` frames; toyworld's
frame-time channel spans one clip). Keys are cached before RoPE and rotated for their slot at
every read. Until the window is full a stream is laid out exactly like the start of one clip;
after that, every new chunk takes the last slot.

A chunk's keys and values also carry the frame time it was made at (a network with position
channels reads it at its input, so it reaches every block). Without `retime` a chunk made in the
last slot keeps that slot's time when it moves down the window, so past the first window every
recent chunk says "the clip's last frames". With `retime` the recent chunks are run again at their
new slots each time the window rolls (one more clean pass per chunk for each recent chunk beyond
the first), so every window reads like one clip: the sink, then the recent chunks and the new one
at the times of their slots (docs/experiments/live-stream.md, section 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    """How a stream is cut and how much of it a chunk sees."""

    chunk: int = 4  # latent frames per chunk
    sink: int = 1  # first chunks of the stream every later chunk attends to
    recent: int = 2  # chunks before the current one it attends to, besides the sink
    retime: bool = False  # re-run the recent chunks at their new slots when the window rolls

    def __post_init__(self):
        if not isinstance(self.retime, bool):
            raise TypeError(f"window retime must be true or false, got {self.retime!r}")
        for name in ("chunk", "sink", "recent"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "chunk" else 0):
                raise ValueError(f"window {name} must be a whole number >= {1 if name == 'chunk' else 0}, got {value!r}")

    @property
    def slots(self) -> int:
        """Chunks in view at once: the kept ones and the one being made."""
        return self.sink + self.recent + 1

    @property
    def frames(self) -> int:
        """Latent frames in view at once."""
        return self.slots * self.chunk

    def slot(self, index: int) -> int:
        """The slot the `index`-th chunk of a stream is made in."""
        return min(index, self.slots - 1)

    def frame_positions(self, slots: range | list[int]) -> torch.Tensor:
        """Frame positions (long [n chunks x chunk]) of the chunks in these slots."""
        return torch.cat([torch.arange(s * self.chunk, (s + 1) * self.chunk) for s in slots])

    def frame_times(self, slot: int) -> torch.Tensor:
        """The frame-time channel's values ([chunk], -1 .. 1 over the window's frames) for a slot:
        what a network with position channels reads for a chunk made there."""
        ramp = torch.linspace(-1.0, 1.0, self.frames) if self.frames > 1 else torch.zeros(1)
        return ramp[slot * self.chunk:(slot + 1) * self.chunk]


class KVCache:
    """Per transformer block, the self-attention keys (before RoPE) and values of the clean
    chunks a stream keeps in view: the sink, then the most recent. One entry per chunk."""

    def __init__(self, window: Window, blocks: int):
        self.window = window
        self.entries: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(blocks)]
        self.written = 0  # chunk writes so far (a retime's writes again count too)

    @property
    def kept(self) -> int:
        """Chunks in view before the next one (the same in every block)."""
        return len(self.entries[0])

    def context(self, block: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys and values [B, n tokens, heads, head dim] of block `block`'s kept chunks, in slot order."""
        kept = self.entries[block]
        if not kept:
            return None
        return torch.cat([k for k, _ in kept], dim=1), torch.cat([v for _, v in kept], dim=1)

    def append(self, block: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Keep a clean chunk's keys and values for block `block`; past the window, the oldest
        chunk after the sink leaves."""
        kept = self.entries[block]
        kept.append((key.detach(), value.detach()))
        if len(kept) > self.window.sink + self.window.recent:
            del kept[self.window.sink]
        if block == len(self.entries) - 1:
            self.written += 1

    def truncate(self, chunks: int) -> None:
        """Keep only the first `chunks` chunks in view (e.g. the sink, before the recent chunks are
        written again)."""
        for block in self.entries:
            del block[chunks:]

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                   for block in self.entries for k, v in block)


def rope_tables(rope, frame_positions: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [1, n frames * height * width, 1, head dim] of diffusers' Wan 3D RoPE
    (`WanRotaryPosEmbed`: the head dimension split into time, height and width parts) for the
    given frame positions and a height x width patch grid, tokens in (frame, row, column) order."""
    limit = rope.freqs_cos.shape[0]
    if int(frame_positions.max()) >= limit or height > limit or width > limit:
        raise ValueError(f"a window of {int(frame_positions.max()) + 1} frames of {height}x{width} patches needs more "
                         f"rotary positions than the transformer holds ({limit})")
    sizes = [rope.t_dim, rope.h_dim, rope.w_dim]
    out = []
    for table in (rope.freqs_cos, rope.freqs_sin):
        t, h, w = table.split(sizes, dim=1)
        n = frame_positions.numel()
        grid = [t[frame_positions.to(t.device)].view(n, 1, 1, -1).expand(n, height, width, -1),
                h[:height].view(1, height, 1, -1).expand(n, height, width, -1),
                w[:width].view(1, 1, width, -1).expand(n, height, width, -1)]
        out.append(torch.cat(grid, dim=-1).reshape(1, n * height * width, 1, -1))
    return out[0], out[1]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on interleaved pairs (x_2i, x_2i+1), as Wan applies it: x [B, n, heads, d]."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2].float(), sin[..., 1::2].float()
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2).type_as(x)
