"""A working session: an engine, the store, and the glue every entry point shares.

`Session.generate` runs a request through the engine, exports the clip (mp4 or gif, temp
name then rename) and logs it, so the CLI, the studio and benches log every generation the
same way; a failed or cancelled request writes nothing.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine import loading, paths
from engine.events import Failed, Result
from engine.export import read_mp4, sweep_partials, write_clip
from engine.generate import Clip, Engine
from engine.requests import GenerateRequest
from engine.store import Store


def unique_output(folder: Path, seed: int) -> Path:
    """A new clip's file name, never one another clip has: time, seed and a random token, with
    the token drawn again while a file of that name (or its temp file's target) exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = folder / f"{stamp}-seed{seed}-{secrets.token_hex(4)}.mp4"
        if not path.exists() and not path.with_name(path.name + ".json").exists():
            return path


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
            path = Path(out) if out else unique_output(paths.outputs(), clip.meta["seed"])
            try:
                write_clip(clip.frames, clip.fps, path, clip.meta)
            except OSError as err:
                yield Failed(f"could not write {path}: {err.strerror or err}")
                return
            gen_id = self.store.log_generation(self.id, clip.meta, str(path.resolve()))
            yield Result(SavedClip(clip, path, gen_id))

    def model_names(self, current: str) -> list[str]:
        """Models the studio can offer: the embedded one, registry entries, the one in use."""
        from engine.registry import load_registry

        try:
            names = list(load_registry())
        except ValueError:
            names = []
        return list(dict.fromkeys(["toyworld", current, *names]))

    def model_defaults(self, model: str) -> dict:
        """Clip-size defaults and limits for the UI's sliders, read off the model's folder (no
        weights are loaded: the page is served before the model is)."""
        try:
            info, students = loading.model_facts(model)
        except (ValueError, FileNotFoundError):
            return {"frames": 17, "size": 64, "max_frames": 33, "max_side": 128, "students": []}
        return {"frames": info.frames, "size": info.height, "max_frames": info.max_frames,
                "max_side": min(info.max_side, 1024), "students": students}

    # --- ratings and the library ---------------------------------------------------------
    RATING_KINDS = {"thumb": (-1, 1), "stars": (1, 5), "pair": (1, 1)}

    def rate(self, generation_id: int, kind: str, value: float, other_id: int | None = None) -> int:
        """Store a rating: thumb -1/+1, stars 1..5, or pair (this clip beat `other_id`)."""
        if kind not in self.RATING_KINDS:
            raise ValueError(f"rating kind must be one of {sorted(self.RATING_KINDS)}, got {kind!r}")
        low, high = self.RATING_KINDS[kind]
        if not low <= value <= high or (kind == "thumb" and value == 0):
            raise ValueError(f"{kind} rating must be in [{low}, {high}], got {value!r}")
        for gid in (generation_id, other_id) if kind == "pair" else (generation_id,):
            if gid is None or self.store.generation(gid) is None:
                raise ValueError(f"no clip with id {gid!r}")
        return self.store.rate(generation_id, kind, value, other_id)

    def library(self, text: str = "", role: str = "", limit: int = 200) -> list[dict]:
        """Logged clips, newest first, filtered by prompt text and role."""
        return self.store.generations(limit=limit, text=text, role=role)

    def request_for(self, generation_id: int) -> GenerateRequest:
        """The request that reproduces a logged clip (same seed and settings)."""
        row = self.store.generation(generation_id)
        if row is None:
            raise ValueError(f"no clip with id {generation_id!r}")
        s = json.loads(row["settings"])
        return GenerateRequest(prompt=s["prompt"], negative=s.get("negative", ""), model=s.get("model_ref") or s["model"],
                               role=s["role"], steps=s["steps"], seed=s["seed"], frames=s["frames"],
                               height=s["height"], width=s["width"], guidance=s.get("guidance"),
                               solver=s.get("solver") or "euler", lora=s.get("lora"),
                               lora_scale=s.get("lora_scale") or 1.0)

    def delete(self, generation_id: int) -> None:
        """Delete a clip's rows (ratings too), then its own files: never a file another logged
        clip names (two CLI runs given the same --out), nor another clip's gif or sidecar."""
        row, shared = self.store.delete_generation(generation_id)
        if row is None:
            raise ValueError(f"no clip with id {generation_id!r}")
        if row["path"] and not shared:
            clip = Path(row["path"])
            for path in (clip, clip.with_name(clip.name + ".json"), clip.with_suffix(".gif"),
                         clip.with_suffix(".gif").with_name(clip.with_suffix(".gif").name + ".json")):
                path.unlink(missing_ok=True)

    def export_gif(self, generation_id: int) -> Path:
        """A gif beside a logged mp4 (written atomically), for download."""
        row = self.store.generation(generation_id)
        if row is None or not row["path"] or not Path(row["path"]).exists():
            raise ValueError(f"no clip file for id {generation_id!r}")
        settings = json.loads(row["settings"])
        gif = Path(row["path"]).with_suffix(".gif")
        return write_clip(read_mp4(row["path"]), settings.get("fps", 8), gif, settings)

    def before_after(self, adapter: str, model: str = "toyworld", prompts: list[str] | None = None,
                     seeds: tuple[int, ...] = (0,), scale: float = 1.0, steps: int = 4) -> list[tuple[Path, str]]:
        """The student's clips without and with an adapter on fixed prompts and seeds, as
        (file, label) pairs in row order: prompt/seed, before then after. Logged like any clip."""
        if not adapter or not Path(adapter).exists():
            raise ValueError(f"no adapter at {adapter!r}")
        if prompts is None:
            from engine.toyworld.render import sample_clip

            prompts = [sample_clip("public-heldout", i)[1] for i in range(3)]
        grid = []
        for prompt in prompts:
            for seed in seeds:
                for lora, label in ((None, "before"), (adapter, "after")):
                    req = GenerateRequest(prompt=prompt, model=model, role="student", steps=steps, seed=seed,
                                          lora=lora, lora_scale=scale)
                    last = list(self.generate(req))[-1]
                    if isinstance(last, Failed):
                        raise ValueError(last.message)
                    grid.append((last.value.path, f"{label} · seed {seed} · {prompt}"))
        return grid
