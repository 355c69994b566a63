"""A working session: an engine, the store, and the glue every entry point shares.

`Session.generate` runs a request through the engine, exports the clip (mp4 or gif, temp
name then rename) and logs it, so the CLI, the studio and benches log every generation the
same way; a failed or cancelled request writes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine import paths
from engine.events import Failed, Result
from engine.export import sweep_partials, write_clip
from engine.generate import Clip, Engine
from engine.requests import GenerateRequest
from engine.store import Store


@dataclass(frozen=True)
class SavedClip:
    clip: Clip
    path: Path
    generation_id: int


class Session:
    def __init__(self, kind: str, engine: Engine | None = None, store: Store | None = None):
        self.engine = engine or Engine()
        self.store = store or Store(paths.database())
        self.id = self.store.start_session(kind)
        sweep_partials(paths.outputs())

    def generate(self, req: GenerateRequest, out: str | Path | None = None,
                 cancel: threading.Event | None = None) -> Iterator:
        """Engine events, with the final Result carrying a SavedClip (file written, row logged)."""
        if out is not None and Path(out).suffix not in (".mp4", ".gif"):
            yield Failed(f"output must end in .mp4 or .gif, got {Path(out).name}")
            return
        for event in self.engine.generate(req, cancel):
            if not isinstance(event, Result):
                yield event
                continue
            clip = event.value
            path = Path(out) if out else paths.outputs() / f"{time.strftime('%Y%m%d-%H%M%S')}-{clip.meta['seed']}.mp4"
            try:
                write_clip(clip.frames, clip.fps, path, clip.meta)
            except OSError as err:
                yield Failed(f"could not write {path}: {err.strerror or err}")
                return
            gen_id = self.store.log_generation(self.id, clip.meta, str(path.resolve()))
            yield Result(SavedClip(clip, path, gen_id))
