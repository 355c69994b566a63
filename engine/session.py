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

import numpy as np

from engine import data, loading, paths
from engine.events import Failed, Result
from engine.export import read_mp4, sweep_partials, thumbnail_path, write_clip, write_thumbnail
from engine.folder import read_info
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
                try:
                    write_thumbnail(clip.frames, path)
                except OSError:  # all or nothing: no clip on disk that no row names
                    for own in (path, path.with_name(path.name + ".json"), thumbnail_path(path)):
                        own.unlink(missing_ok=True)
                    raise
            except OSError as err:
                yield Failed(f"could not write {path}: {err.strerror or err}")
                return
            gen_id = self.store.log_generation(self.id, clip.meta, str(path.resolve()))
            yield Result(SavedClip(clip, path, gen_id))

    def stream(self, req, out: str | Path | None = None, cancel: threading.Event | None = None,
               prompt_now=None) -> Iterator:
        """A stream (engine/stream/play.py `StreamRequest`) through the engine: each `StreamChunk`
        as it is made, then Result(SavedClip) once it ends (its length made, or `cancel` set): the
        whole stream written as one clip and logged with role "stream", its prompts and timings in
        the row. `prompt_now()` (a live prompt box) steers it from the next chunk."""
        from engine.events import StreamChunk
        from engine.stream.play import summary

        if out is not None and Path(out).suffix not in (".mp4", ".gif"):
            yield Failed(f"output must end in .mp4 or .gif, got {Path(out).name}")
            return
        chunks = []
        for event in self.engine.stream(req, cancel, prompt_now):
            if isinstance(event, StreamChunk):
                chunks.append(event)
            yield event
            if isinstance(event, Failed):
                return
        if not chunks:
            yield Failed("the stream was stopped before its first chunk; nothing to save", kind="cancelled")
            return
        frames, fps = np.concatenate([c.frames for c in chunks]), chunks[0].meta["fps"]
        numbers, facts = summary(chunks, fps), chunks[0].meta
        meta = {"prompt": req.prompt, "model": req.model, "role": "stream", "steps": len(facts["timesteps"]),
                "seed": req.seed, "frames": len(frames), "height": frames.shape[1], "width": frames.shape[2],
                "timesteps": facts["timesteps"], "window": facts["window"],
                "switches": [list(s) for s in req.switches], "nfe": (len(facts["timesteps"]) + 1) * len(chunks),
                "stream": numbers,
                "timings": {"total_s": round(chunks[-1].since_play_s, 4),
                            "decode_s": round(sum(c.decode_s for c in chunks), 4),
                            "denoise_s": round(sum(c.made_s for c in chunks), 4)}}
        clip = Clip(frames, fps, meta)
        path = Path(out) if out else unique_output(paths.outputs(), req.seed)
        try:
            write_clip(frames, fps, path, meta)
            write_thumbnail(frames, path)
        except OSError as err:
            for own in (path, path.with_name(path.name + ".json"), thumbnail_path(path)):
                own.unlink(missing_ok=True)
            yield Failed(f"could not write {path}: {err.strerror or err}")
            return
        gen_id = self.store.log_generation(self.id, meta, str(path.resolve()))
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
            return {"frames": 17, "size": 64, "max_frames": 33, "max_side": 128, "students": [], "vocabulary": {},
                    "streams": False}
        return {"frames": info.frames, "size": info.height, "max_frames": info.max_frames,
                "max_side": min(info.max_side, 1024), "students": students, "vocabulary": info.vocabulary,
                "streams": bool(info.stream)}

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

    def library(self, text: str = "", role: str = "", limit: int = 200, model: str = "", adapter: str = "",
                rating: str = "") -> list[dict]:
        """Logged clips, newest first, filtered (`Store.generations`), each with `ratings`: every
        rating it has, in words ("thumb up", "4 stars", "won A/B over 12"), and `thumbnail`: its
        first frame's PNG (made now for a clip logged before thumbnails were; None without a file)."""
        rows = self.store.generations(limit=limit, text=text, role=role, model=model, adapter=adapter, rating=rating)
        said = self.rating_words([r["id"] for r in rows])
        for row in rows:
            row["ratings"] = said.get(row["id"], [])
            row["thumbnail"] = self._thumbnail(row["path"])
        return rows

    def rating_words(self, ids: list[int]) -> dict[int, list[str]]:
        """Every rating of these clips in words, oldest first: thumbs, stars, and A/B choices
        seen from both sides (the winner "won A/B over N", the loser "lost A/B to N")."""
        wanted, said = set(ids), {}
        for r in self.store.ratings():
            if r["kind"] == "thumb" and r["generation_id"] in wanted:
                said.setdefault(r["generation_id"], []).append("thumb up" if r["value"] > 0 else "thumb down")
            elif r["kind"] == "stars" and r["generation_id"] in wanted:
                said.setdefault(r["generation_id"], []).append(f"{r['value']:g} stars")
            elif r["kind"] == "pair":
                if r["generation_id"] in wanted:
                    said.setdefault(r["generation_id"], []).append(f"won A/B over {r['other_id']}")
                if r["other_id"] in wanted:
                    said.setdefault(r["other_id"], []).append(f"lost A/B to {r['generation_id']}")
        return said

    @staticmethod
    def _thumbnail(clip: str | None) -> str | None:
        if not clip or not Path(clip).exists():
            return None
        thumb = thumbnail_path(clip)
        if not thumb.exists():
            try:
                write_thumbnail(read_mp4(clip)[:1], clip)
            except (OSError, ValueError, RuntimeError):  # an unreadable clip has no thumbnail
                return None
        return str(thumb)

    def request_for(self, generation_id: int) -> GenerateRequest:
        """The request that reproduces a logged clip (same seed and settings)."""
        row = self.store.generation(generation_id)
        if row is None:
            raise ValueError(f"no clip with id {generation_id!r}")
        s = json.loads(row["settings"])
        return GenerateRequest(prompt=s["prompt"], negative=s.get("negative", ""), model=s.get("model_ref") or s["model"],
                               role=s["role"], steps=s["steps"], seed=s["seed"], frames=s["frames"],
                               height=s["height"], width=s["width"], guidance=s.get("guidance"),
                               solver=s.get("solver"), lora=s.get("lora"),
                               lora_scale=s.get("lora_scale") or 1.0)

    def delete(self, generation_id: int) -> None:
        """Delete a clip's rows (ratings too), then its own files: never a file another logged
        clip names (two CLI runs given the same --out), nor another clip's gif or sidecar."""
        row, shared = self.store.delete_generation(generation_id)
        if row is None:
            raise ValueError(f"no clip with id {generation_id!r}")
        if row["path"] and not shared:
            clip = Path(row["path"])
            for path in (clip, clip.with_name(clip.name + ".json"), thumbnail_path(clip), clip.with_suffix(".gif"),
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

    def compare_export(self, generation_ids: list[int]) -> Path:
        """The logged clips side by side in one mp4 under captions naming each (id, role and
        steps, time, prompt), written beside the outputs (`engine/compose.py`)."""
        from engine.compose import side_by_side

        clips = []
        for gid in generation_ids:
            row = self.store.generation(gid)
            if row is None or not row["path"] or not Path(row["path"]).exists():
                raise ValueError(f"no clip file for id {gid!r}")
            steps = f"{row['steps']} step" + ("s" if row["steps"] != 1 else "")
            clips.append((row["path"], f"clip {gid} · {row['role']} {steps} · {row['total_s'] or 0:.2f} s · "
                                       f"{row['prompt']}"))
        name = "compare-" + "-".join(str(g) for g in generation_ids) + f"-{secrets.token_hex(3)}.mp4"
        return side_by_side(clips, paths.outputs() / "compare" / name)

    def before_after(self, adapter: str, model: str = "toyworld", prompts: list[str] | None = None,
                     seeds: tuple[int, ...] = (0,), scale: float = 1.0, steps: int | None = None
                     ) -> list[tuple[Path, str]]:
        """The student's clips without and with an adapter on fixed prompts and seeds, as
        (file, label) pairs in row order: prompt/seed, before then after. Logged like any clip.
        `steps`: the student the adapter was tuned on (its adapter.json), else the model's own."""
        if not adapter or not Path(adapter).exists():
            raise ValueError(f"no adapter at {adapter!r}")
        meta = Path(adapter) / "adapter.json"
        record = json.loads(meta.read_text()) if meta.exists() else {}
        if steps is None:
            steps = record.get("student_steps")
        if prompts is None:  # the held-out prompts of the model's world (engine/data.py), else the tune's own
            info = read_info(loading.resolve(model)[0])
            prompts = data.for_model(info).prompts("heldout", 3) if info.world else record.get("heldout_prompts")
            if not prompts:
                raise ValueError(f"model {info.name!r} has no held-out prompts of its own and the adapter names none")
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
