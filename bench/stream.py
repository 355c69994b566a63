"""The live stream's table (docs/RESULTS.md, "Live stream"): its speed, and MiniBench on 17-frame
windows of long streams against the renderer's long clips and the bidirectional 4-step student.

    python bench/stream.py speed --model ~/models/toyworld-causal [--minutes 10]
    python bench/stream.py quality --rows "causal=~/models/toyworld-causal" ["Re-DMD=DIR" ...]
                           ["retimed=DIR#retime" ...]
                           [--prompts 32 --seeds 2 --seconds 60 --switch-at 10]
    python bench/stream.py continuation --rows "shipped=assets/toyworld" "LABEL=DIR" ... [--clips 16]

speed: one stream through `engine.stream.play` (what `rushes stream` and the studio run), batch 1,
for `--minutes`: time to the first decoded chunk, the median chunk cost (make + decode) in the
first minute and in the last, their ratio (flat = 1.00), the realtime factor (seconds of video
per second of wall time) and the KV cache's size at the end of each minute.

quality: per split, `--prompts` captions x `--seeds` streams of `--seconds`, made side by side
(`stream_chunks(batch=...)`), each read in 17-frame windows starting at every chunk border, by
the MiniBench judge and by the independent reader (engine/toyworld/eval_reader.py, which no
training code imports). Spans of windows are scored as a whole: the first window (a clip's
length, comparable with the 4-step student's fresh clips of the same prompts and seeds), the first
ten seconds and the last ten. Switch streams run the prompt of clip i for `--switch-at` seconds,
then clip i+1's, with the cache rebuilt under the new prompt (KV re-cache, the default) and
without; the window two chunks after the switch, and the ten seconds from there, are set beside
a fresh stream of clip i+1. A row's folder may end in `#retime` or `#no-retime`: its window's retime overridden (cache.py) for
that row. The renderer's long clip of each prompt (render_long: movers
wrap at the edges, grow and shrink repeat) is the ground truth, read the same way: a window where
an object wraps reads wrong even there, so the spans are compared with the ground truth's spans.

continuation: how well each row's causal student says what comes next in the renderer's long clips
(train-split specs, a seed no training run uses): the continuation term's mean squared error
(engine/stream/continuation.py: the chunk's x0 estimate, the cache holding the clip's true past)
at each of the student's levels, for chunks 2, 6, 12 and 20, beside "the last frame held" (the
clip's last true frame repeated: what a stream that stops would draw).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from engine import loading, schedule
from engine.requests import StreamRequest
from engine.stream.causal import CausalWan
from engine.stream.play import causal_student, play
from engine.stream.sampler import stream_chunks
from engine.toyworld import eval_reader, judge, minibench
from engine.toyworld.render import render_long, sample_clip

WINDOW = 17  # frames of a MiniBench clip
SPAN_S = 10  # seconds of windows in a span
RETIME = {"": None, "retime": True, "no-retime": False}  # a row's FOLDER#HOW: the window's retime overridden
READERS = {"judge": judge.score, "reader": eval_reader.score}


def speed(args) -> None:
    loaded = loading.load(str(Path(args.model).expanduser()))
    fps = loaded.info.fps
    req = StreamRequest(prompt=args.prompt, seconds=60 * args.minutes, seed=0)
    causal, _ = causal_student(loaded)
    began = time.perf_counter()
    chunks = list(play(loaded, req))
    wall = time.perf_counter() - began
    per_chunk = [c.made_s + c.decode_s for c in chunks]
    per_minute = {}
    for c, cost in zip(chunks, per_chunk):
        per_minute.setdefault(int(c.start_s // 60), []).append(cost)
    first, last = statistics.median(per_minute[0]), statistics.median(per_minute[max(per_minute)])
    frames = sum(len(c.frames) for c in chunks)
    print(f"model {args.model}: {args.minutes} min stream, {len(chunks)} chunks of {causal.window.chunk} latent frames, "
          f"window sink {causal.window.sink} + recent {causal.window.recent}, {fps} fps\n")
    print("| first chunk (s) | chunk cost, minute 1 (s) | chunk cost, last minute (s) | last / first | "
          "chunk duration (s) | realtime factor |")
    print("|---|---|---|---|---|---|")
    duration = len(chunks[0].frames) / fps
    print(f"| {chunks[0].since_play_s:.3f} | {first:.4f} | {last:.4f} | {last / first:.3f} | {duration:.3f} | "
          f"{frames / fps / wall:.2f} |")
    print("\nmedian chunk cost per minute (s): " + ", ".join(f"{statistics.median(v):.4f}" for _, v in
                                                              sorted(per_minute.items())))


def _window_scores(clip: np.ndarray, spec, starts: list[int]) -> dict[str, dict[str, float]]:
    """Per reader, the aspects' means over 17-frame windows of `clip` starting at `starts`, plus
    the reader's directed/opposite counts."""
    out = {}
    for name, reader in READERS.items():
        scores = [reader(clip[s:s + WINDOW], spec) for s in starts]
        parts = {k: float(np.mean([sc[k] for sc in scores])) for k in minibench.ASPECTS}
        parts["semantic"] = float(np.mean([parts[k] for k in minibench.ASPECTS]))
        if name == "reader":
            parts["directed"] = float(sum(sc["directed"] for sc in scores))
            parts["opposite"] = float(sum(sc["opposite"] for sc in scores))
        out[name] = parts
    return out


def _streams(loaded, prompts: list[list[str]], chunks: int, seed: int, recache: bool = True,
             retime: bool | None = None) -> np.ndarray:
    """Streams side by side: `prompts[i]` is stream i's prompt per chunk; uint8 [N, frames, H, W, 3].
    `retime` overrides the window's setting (None: the model's)."""
    causal, timesteps = causal_student(loaded)
    if retime is not None:
        causal = CausalWan(causal.transformer, dataclasses.replace(causal.window, retime=retime))
    info = loaded.info
    c, _, h, w = loaded.codec.latent_shape(info.frames, info.height, info.width)
    sigmas = schedule.student_sigmas(timesteps, info.shift).tolist()
    encoded: dict[str, torch.Tensor] = {}

    def text_for(i: int) -> torch.Tensor:
        rows = []
        for p in (row[min(i, len(row) - 1)] for row in prompts):
            if p not in encoded:
                encoded[p] = loaded.text.encode([p]).to(causal.dtype)
            rows.append(encoded[p])
        return torch.cat(rows)

    made = []
    generator = torch.Generator().manual_seed(seed)
    for _, latents in stream_chunks(causal, sigmas, text_for, (c, h, w), generator, chunks, batch=len(prompts),
                                      recache=recache):
        made.append(loaded.codec.decode(latents))  # [N, chunk frames, H, W, 3]
    return np.concatenate(made, axis=1)


def _row(label: str, split: str, scores: list[dict]) -> str:
    j = [s["judge"] for s in scores]
    r = [s["reader"] for s in scores]
    def mean(rows, k):
        return 100 * float(np.mean([x[k] for x in rows]))

    opposite = sum(x["opposite"] for x in r) / max(sum(x["directed"] for x in r), 1)
    return (f"| {label} | {split} | {mean(j, 'semantic'):.1f}% | {mean(r, 'semantic'):.1f}% | {mean(r, 'colour'):.1f}% | "
            f"{mean(r, 'shape'):.1f}% | {mean(r, 'motion'):.1f}% | {mean(r, 'count'):.1f}% | {100 * opposite:.1f}% |")


def _difference(label: str, split: str, a: list[dict], b: list[dict]) -> str:
    """a minus b in semantic points by each reader, with the paired SE over the pairs."""
    cells = []
    for name in READERS:
        d = 100 * np.array([x[name]["semantic"] - y[name]["semantic"] for x, y in zip(a, b)])
        cells.append(f"{d.mean():+.1f} ± {d.std(ddof=1) / math.sqrt(len(d)):.1f}")
    return f"| {label} | {split} | {cells[0]} | {cells[1]} |"


def _per_prompt(scores: list[dict], seeds: int) -> list[dict]:
    """Means over a prompt's seeds (the paired unit of the differences)."""
    out = []
    for i in range(0, len(scores), seeds):
        group = scores[i:i + seeds]
        out.append({name: {k: float(np.mean([g[name][k] for g in group])) for k in group[0][name]}
                    for name in READERS})
    return out


def quality(args) -> None:
    rows = [r.rpartition("=")[::2] for r in args.rows]
    fps_frames = None
    student_rows, tables, diffs = {}, [], []
    for label, folder in rows:
        folder, _, how = folder.partition("#")
        if how not in RETIME:
            raise SystemExit(f"row {label!r}: after '#' give one of {', '.join(k for k in RETIME if k)}, got {how!r}")
        retime = RETIME[how]
        loaded = loading.load(str(Path(folder).expanduser()))
        fps = loaded.info.fps
        chunk_frames = causal_student(loaded)[0].window.chunk
        chunks = math.ceil(args.seconds * fps / chunk_frames)
        frames = chunks * chunk_frames
        span = SPAN_S * fps
        first_span = list(range(0, span - WINDOW + 1 + chunk_frames, chunk_frames))
        last_span = list(range(frames - span, frames - WINDOW + 1, chunk_frames))
        switch = round(args.switch_at * fps / chunk_frames)  # the chunk the new prompt applies from
        after = switch * chunk_frames + 2 * chunk_frames
        after_span = list(range(after, after + span - WINDOW + 1, chunk_frames))
        switch_chunks = math.ceil((after + span) / chunk_frames)
        fps_frames = (fps, frames)
        for split in args.splits.split(","):
            items = [sample_clip(split, i) for i in range(args.prompts)]
            captions = [c for _, c in items]
            began = time.perf_counter()
            plain = [[c] for c in captions for _ in range(args.seeds)]
            clips = np.concatenate([_streams(loaded, plain[i:i + args.batch], chunks, seed=1000 + i,
                                             retime=retime)
                                    for i in range(0, len(plain), args.batch)])
            nxt = [(i + 1) % len(items) for i in range(len(items))]
            switched = [[captions[i]] * switch + [captions[nxt[i]]] for i in range(len(items)) for _ in range(args.seeds)]
            switch_clips = {recache: np.concatenate([_streams(loaded, switched[i:i + args.batch], switch_chunks,
                                                              seed=2000 + i, recache=recache, retime=retime)
                                                     for i in range(0, len(switched), args.batch)])
                            for recache in (True, False)}
            made_s = time.perf_counter() - began
            specs = [spec for spec, _ in items for _ in range(args.seeds)]
            first = [_window_scores(c, s, [0]) for c, s in zip(clips, specs)]
            early = [_window_scores(c, s, first_span) for c, s in zip(clips, specs)]
            late = [_window_scores(c, s, last_span) for c, s in zip(clips, specs)]
            new_specs = [items[nxt[i]][0] for i in range(len(items)) for _ in range(args.seeds)]
            post, post_span = {}, {}
            for recache, made in switch_clips.items():
                post[recache] = [_window_scores(c, s, [after]) for c, s in zip(made, new_specs)]
                post_span[recache] = [_window_scores(c, s, after_span) for c, s in zip(made, new_specs)]
            k = args.seeds
            fresh_first = [first[nxt[i // k] * k + i % k] for i in range(len(first))]  # a fresh stream of the new prompt
            fresh_early = [early[nxt[i // k] * k + i % k] for i in range(len(early))]
            if split not in student_rows:
                truth = [render_long(spec, frames) for spec, _ in items]
                t_first = [_window_scores(c, s, [0]) for c, (s, _) in zip(truth, items)]
                t_early = [_window_scores(c, s, first_span) for c, (s, _) in zip(truth, items)]
                t_late = [_window_scores(c, s, last_span) for c, (s, _) in zip(truth, items)]
                source = minibench.model_source(_engine(), str(Path(folder).expanduser()), "student", 4)
                student = [_window_scores(source(c, seed), spec, [0]) for spec, c in items for seed in range(args.seeds)]
                student_rows[split] = student
                tables += [_row("renderer long clip: first window", split, t_first),
                           _row(f"renderer long clip: first {SPAN_S} s", split, t_early),
                           _row(f"renderer long clip: last {SPAN_S} s", split, t_late),
                           _row("bidirectional 4-step student, fresh clips", split, student)]
            student = student_rows[split]
            tables += [_row(f"{label}: first window", split, first),
                       _row(f"{label}: first {SPAN_S} s", split, early),
                       _row(f"{label}: last {SPAN_S} s", split, late),
                       *(_row(f"{label}: window 2 chunks after a switch{how}", split, post[recache])
                         for recache, how in ((True, " (KV re-cache)"), (False, " (no re-cache)"))),
                       *(_row(f"{label}: {SPAN_S} s from 2 chunks after a switch{how}", split, post_span[recache])
                         for recache, how in ((True, " (KV re-cache)"), (False, " (no re-cache)")))]
            def per(scores):
                return _per_prompt(scores, args.seeds)

            diffs += [_difference(f"{label}: last {SPAN_S} s - first {SPAN_S} s (drift)", split, per(late), per(early)),
                      _difference(f"{label}: first window - 4-step student", split, per(first), per(student)),
                      *(_difference(f"{label}: after switch{how} - fresh stream of the new prompt (window)", split,
                                    per(post[recache]), per(fresh_first))
                        for recache, how in ((True, ", KV re-cache"), (False, ", no re-cache"))),
                      *(_difference(f"{label}: after switch{how} - fresh stream of the new prompt ({SPAN_S} s)",
                                    split, per(post_span[recache]), per(fresh_early))
                        for recache, how in ((True, ", KV re-cache"), (False, ", no re-cache")))]
            print(f"[{label} {split}] {3 * len(plain)} streams made and decoded in {made_s:.0f} s", flush=True)
    fps, frames = fps_frames
    print(f"\nMiniBench on {WINDOW}-frame windows: {args.prompts} prompts x {args.seeds} seeds per split, streams of "
          f"{frames} frames ({frames / fps:.0f} s at {fps} fps); a span is every window starting at a chunk border "
          f"in it; switch at {args.switch_at} s\n")
    print("| row | split | judge semantic | reader semantic | colour | shape | motion | count | opposite direction |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(tables))
    print("\nDifferences in semantic points (paired over prompts, ± SE)\n")
    print("| difference | split | judge | reader |\n|---|---|---|---|")
    print("\n".join(diffs))


_ENGINE = None


CONTINUATION_CHUNKS = (2, 6, 12, 20)


def continuation(args) -> None:
    from engine.stream.continuation import continuation_loss
    from engine.toyworld.latents import LatentPool

    rows = [r.rpartition("=")[::2] for r in args.rows]
    first = loading.load(str(Path(rows[0][1]).expanduser()))
    chunk = causal_student(first)[0].window.chunk
    frames = (max(CONTINUATION_CHUNKS) + 1) * chunk
    pool = LatentPool(first.codec, first.text, capacity=args.clips, seed=99, frames=frames,
                      size=first.info.height)
    pool.fast_forward(args.clips)
    clips, states = pool.latents, pool.states.float()
    print(f"continuation MSE of the x0 estimate, {args.clips} long clips, at the student's levels (high to low)\n")
    print("| row | chunk | " + " | ".join(f"level {i + 1}" for i in range(4)) + " | last frame held |")
    print("|---|---|---|---|---|---|---|")
    for label, folder in rows:
        loaded = loading.load(str(Path(folder).expanduser()))
        causal, timesteps = causal_student(loaded)
        sigmas = schedule.student_sigmas(timesteps, loaded.info.shift).tolist()
        for at in CONTINUATION_CHUNKS:
            target = clips[:, :, at * chunk:(at + 1) * chunk]
            held = (clips[:, :, at * chunk - 1:at * chunk].expand_as(target) - target).pow(2).mean().item()
            with torch.no_grad():
                errors = [continuation_loss(causal, clips, states, at, s, torch.Generator().manual_seed(0))[0].item()
                          for s in sigmas]
            print(f"| {label} | {at} | " + " | ".join(f"{e:.3f}" for e in errors) + f" | {held:.3f} |")


def _engine():
    global _ENGINE
    if _ENGINE is None:
        from engine.generate import Engine
        _ENGINE = Engine()
    return _ENGINE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--model", required=True, help="a model folder with a causal student")
    sp.add_argument("--minutes", type=float, default=10.0)
    sp.add_argument("--prompt", default="a red circle moving right on a black background")
    q = sub.add_parser("quality")
    q.add_argument("--rows", nargs="+", required=True, help="LABEL=FOLDER of a model with a causal student")
    q.add_argument("--prompts", type=int, default=32)
    q.add_argument("--seeds", type=int, default=2)
    q.add_argument("--seconds", type=float, default=60.0)
    q.add_argument("--switch-at", type=float, default=10.0)
    q.add_argument("--batch", type=int, default=32, help="streams made side by side")
    q.add_argument("--splits", default="public-eval,public-heldout")
    c = sub.add_parser("continuation")
    c.add_argument("--rows", nargs="+", required=True, help="LABEL=FOLDER of a model with a causal student")
    c.add_argument("--clips", type=int, default=16)
    args = ap.parse_args()
    {"speed": speed, "quality": quality, "continuation": continuation}[args.what](args)


if __name__ == "__main__":
    main()
