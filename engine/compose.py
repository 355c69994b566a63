"""Clips made into one file with moviepy: a side-by-side comparison with a caption over each clip
(student beside teacher, before beside after), and clips joined one after another.

moviepy is the tool here because it composes finished files (reading, placing, padding, timing
and re-encoding them); the engine's own clips are written by `engine/export.py` straight from
frames. Captions are drawn with PIL (moviepy's TextClip needs a font file the machine may lack).
Output goes to a temp name and is renamed, so a failure leaves nothing at the final path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CAPTION_SIZE, CAPTION_LINE, CAPTION_PAD = 14, 18, 4  # caption font size, line height and margin (pixels)
MIN_SIDE = 256  # small clips are enlarged (nearest) so their captions are readable


def _font():
    try:
        return ImageFont.load_default(size=CAPTION_SIZE)  # Pillow's own scalable font
    except TypeError:  # Pillow without FreeType: its small bitmap font
        return ImageFont.load_default()


def _wrap(text: str, width: int, font) -> list[str]:
    """`text` broken at spaces into lines no wider than `width` pixels (a longer word alone)."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width - 2 * CAPTION_PAD:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines or [""]


def _caption_bar(lines: list[str], width: int, rows: int, font) -> np.ndarray:
    """A black bar `rows` lines tall with `lines` in white: uint8 [H, width, 3]."""
    bar = Image.new("RGB", (width, rows * CAPTION_LINE + CAPTION_PAD), "black")
    draw = ImageDraw.Draw(bar)
    for n, line in enumerate(lines):
        draw.text((CAPTION_PAD, CAPTION_PAD + n * CAPTION_LINE), line, fill="white", font=font)
    return np.asarray(bar)


def _scale(clip) -> int:
    return max(1, MIN_SIDE // max(clip.w, clip.h))


def _finish(final, out: Path, fps: int) -> Path:
    out = Path(out)
    if out.suffix != ".mp4":
        raise ValueError(f"a composed clip is written as .mp4, got {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".partial-{os.getpid()}-{out.name}")
    try:
        final.write_videofile(str(tmp), fps=fps, codec="libx264", audio=False, logger=None,
                              ffmpeg_params=["-pix_fmt", "yuv420p", "-crf", "12"])
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _open(paths: list[str | Path]):
    from moviepy import VideoFileClip

    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise ValueError(f"no clip file at {', '.join(missing)}")
    return [VideoFileClip(str(p), audio=False) for p in paths]


def side_by_side(clips: list[tuple[str | Path, str]], out: str | Path) -> Path:
    """The clips next to each other, each enlarged to a readable size by whole pixels and under
    its caption, looping to the longest; written to `out` (.mp4)."""
    from moviepy import CompositeVideoClip, ImageClip, clips_array, vfx

    if not clips:
        raise ValueError("side_by_side needs at least one clip")
    videos = _open([p for p, _ in clips])
    try:
        scale = min(_scale(v) for v in videos)
        length = max(v.duration for v in videos)
        font = _font()
        big = [v.resized(scale) for v in videos]  # whole-pixel steps keep a small clip's edges honest
        wrapped = [_wrap(caption, b.w, font) for b, (_, caption) in zip(big, clips)]
        rows = max(len(w) for w in wrapped)  # one bar height for all: the clips line up
        columns = []
        for video, lines in zip(big, wrapped):
            bar = _caption_bar(lines, video.w, rows, font)
            looped = video.with_effects([vfx.Loop(duration=length)]) if video.duration < length else video
            columns.append(CompositeVideoClip([ImageClip(bar).with_duration(length).with_position((0, 0)),
                                               looped.with_position((0, bar.shape[0]))],
                                              size=(video.w, video.h + bar.shape[0]), bg_color=(0, 0, 0)
                                              ).with_duration(length))
        return _finish(clips_array([columns], bg_color=(0, 0, 0)).with_duration(length), out, round(videos[0].fps))
    finally:
        for v in videos:
            v.close()


def join(paths: list[str | Path], out: str | Path) -> Path:
    """The clips one after another in one file (the first's size; others are fitted to it)."""
    from moviepy import concatenate_videoclips

    if not paths:
        raise ValueError("join needs at least one clip")
    videos = _open(paths)
    try:
        w, h = videos[0].size
        fitted = [v if v.size == [w, h] or tuple(v.size) == (w, h) else v.resized((w, h)) for v in videos]
        return _finish(concatenate_videoclips(fitted, method="compose"), out, round(videos[0].fps))
    finally:
        for v in videos:
            v.close()
