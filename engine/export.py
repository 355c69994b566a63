"""Export clips: mp4 (h264, yuv420p) and gif, settings JSON embedded and in a sidecar file.

Every file is written under a temporary name in the target folder and `os.replace`d into
place, so a kill leaves either nothing or a whole file at the final path; `sweep_partials`
removes leftovers at start-up. The mp4 carries the settings in its `comment` metadata tag.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

PARTIAL = ".partial-"
FORMATS = (".mp4", ".gif")


def _tmp_for(path: Path) -> Path:
    return path.with_name(f"{PARTIAL}{os.getpid()}-{path.name}")


def write_clip(frames: np.ndarray, fps: int, path: str | Path, settings: dict) -> Path:
    """Write frames uint8 [T, H, W, 3] to `path` (.mp4 or .gif) plus `path`.json; returns path."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"output must end in {' or '.join(FORMATS)}, got {path.name}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = path.with_name(path.name + ".json")
    tmp, sidecar_tmp = _tmp_for(path), _tmp_for(sidecar)
    placed = False
    try:  # both files complete under temp names first: a full disk leaves neither at a final path
        sidecar_tmp.write_text(json.dumps(settings, indent=2, sort_keys=True, default=str))
        if path.suffix == ".mp4":
            _write_mp4(frames, fps, tmp, json.dumps(settings, sort_keys=True, default=str))
        else:
            _write_gif(frames, fps, tmp)
        _replace_synced(tmp, path)
        placed = True
        _replace_synced(sidecar_tmp, sidecar)
    except BaseException:
        if placed:
            path.unlink(missing_ok=True)
        raise
    finally:
        for leftover in (tmp, sidecar_tmp):
            leftover.unlink(missing_ok=True)
    return path


THUMBNAIL_SIDE = 128  # pixels: small clips are enlarged to it by whole pixels (nearest), large ones shrunk


def thumbnail_path(clip: str | Path) -> Path:
    """Where a clip's thumbnail lives: beside it, `<clip>.png`."""
    clip = Path(clip)
    return clip.with_name(clip.name + ".png")


def write_thumbnail(frames: np.ndarray, clip: str | Path) -> Path:
    """The clip's first frame as a PNG beside it (`thumbnail_path`), written atomically."""
    first = Image.fromarray(np.ascontiguousarray(frames[0]))
    scale = THUMBNAIL_SIDE / max(first.size)
    size = tuple(max(1, round(side * scale)) for side in first.size)
    if scale >= 1:
        scale = max(1, int(scale))  # whole pixels: a 64-px clip stays crisp
        size = (first.size[0] * scale, first.size[1] * scale)
    path = thumbnail_path(clip)
    tmp = _tmp_for(path)
    try:
        first.resize(size, Image.NEAREST if scale >= 1 else Image.BILINEAR).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _replace_synced(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def _write_mp4(frames: np.ndarray, fps: int, path: Path, comment: str) -> None:
    t, h, w, _ = frames.shape
    writer = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
        macro_block_size=2, ffmpeg_log_level="error", output_params=[
            "-crf", "12", "-metadata", f"comment={comment}", "-movflags", "+faststart", "-f", "mp4"])
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def _write_gif(frames: np.ndarray, fps: int, path: Path) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0)


def read_mp4(path: str | Path) -> np.ndarray:
    """Decode an mp4 back to uint8 frames [T, H, W, 3] (for checks and tests)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
    return np.stack(frames)


def read_settings(path: str | Path) -> dict:
    """The settings JSON embedded in an mp4's comment tag."""
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("comment="):
            return json.loads(line[len("comment="):].replace("\\=", "=").replace("\\;", ";")
                              .replace("\\#", "#").replace("\\\\", "\\"))
    raise ValueError(f"no settings metadata in {path}")


def sweep_partials(folder: str | Path) -> int:
    """Delete temp files a killed export left behind; returns how many were removed."""
    removed = 0
    for leftover in Path(folder).rglob(f"{PARTIAL}*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed
