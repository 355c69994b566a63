import json
import sqlite3
import threading

import numpy as np
import pytest

from engine.export import read_mp4, read_settings, sweep_partials, write_clip
from engine.store import Store
from engine.toyworld.render import render, sample_clip


def _frames():
    return render(sample_clip("train", 3)[0], frames=9, size=64)


def test_mp4_round_trip_with_metadata(tmp_path):
    frames = _frames()
    settings = {"prompt": "a red; ball = #1", "seed": 3}
    path = write_clip(frames, 8, tmp_path / "clip.mp4", settings)
    back = read_mp4(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 4  # h264 at crf 12, yuv420p
    assert read_settings(path) == settings
    assert json.loads((tmp_path / "clip.mp4.json").read_text()) == settings
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".partial")] == []


def test_gif_and_bad_names(tmp_path):
    path = write_clip(_frames(), 8, tmp_path / "clip.gif", {})
    assert path.read_bytes()[:6] == b"GIF89a"
    with pytest.raises(ValueError, match="clip.avi"):
        write_clip(_frames(), 8, tmp_path / "clip.avi", {})
    assert not (tmp_path / "clip.avi").exists()


def test_sweep_partials(tmp_path):
    folder = tmp_path / "outputs"
    folder.mkdir()
    (folder / ".partial-123-x.mp4").write_bytes(b"half")
    (folder / "keep.mp4").write_bytes(b"whole")
    assert sweep_partials(folder) == 1
    assert [p.name for p in folder.iterdir()] == ["keep.mp4"]


def test_store_rows_and_migrations(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = store.start_session("test")
    gid = store.log_generation(sid, {"prompt": "p", "seed": 1, "steps": 4, "timings": {"total_s": 0.5}}, "/x.mp4")
    store.rate(gid, "stars", 4)
    run = store.create_run("tune", {"lr": 1e-4})
    store.log_metrics(run, 1, {"loss": 0.5, "reward": 0.1})
    store.update_run(run, status="running", step=1)
    assert store.generation(gid)["total_s"] == 0.5
    assert store.run(run)["status"] == "running"
    assert [m["name"] for m in store.metrics(run)] == ["loss", "reward"]
    again = Store(tmp_path / "s.db")  # reopening applies no migration twice
    assert again.db.execute("PRAGMA user_version").fetchone()[0] == 2
    again.update_run(run, phase="tuning", phase_step=3, phase_total=10, eta_s=12.5)  # the v2 columns
    assert {k: again.run(run)[k] for k in ("phase", "phase_step", "eta_s")} == {"phase": "tuning", "phase_step": 3,
                                                                                "eta_s": 12.5}
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_concurrent_writers_lose_nothing(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = store.start_session("test")
    run = store.create_run("tune", {})

    def writer(k):
        for i in range(100):
            store.log_generation(sid, {"prompt": f"{k}-{i}", "seed": i}, None)
            store.log_metrics(run, i, {f"m{k}": float(i)})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("select count(*) from generations").fetchone()[0] == 800
    assert conn.execute("select count(*) from run_metrics").fetchone()[0] == 800
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_clips_with_one_seed_in_one_second_never_share_a_file_and_delete_removes_only_its_own(
        tiny_folder, rushes_home, tmp_path, monkeypatch):
    """Issue: files were named time-seed, so a second clip in the same second with the same seed
    overwrote the first, and deleting one deleted the other's video."""
    import time

    from engine.events import Result
    from engine.requests import GenerateRequest
    from engine.session import Session

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261207-120000")  # every clip in one second
    session = Session("test")
    saved = []
    for prompt in ("a red ball", "a blue box", "a red ball", "a green cone", "a red ball", "a cyan orb"):
        req = GenerateRequest(prompt=prompt, model=str(tiny_folder), role="student", steps=1, seed=7)
        saved.append(next(e.value for e in session.generate(req) if isinstance(e, Result)))
    paths = [s.path for s in saved]
    assert len(set(paths)) == len(paths) and all(p.exists() for p in paths)
    frames = {s.generation_id: read_mp4(s.path) for s in saved}
    session.export_gif(saved[2].generation_id)  # a download beside the clip to delete
    session.delete(saved[2].generation_id)
    assert not saved[2].path.exists() and not saved[2].path.with_suffix(".gif").exists()
    assert not saved[2].path.with_name(saved[2].path.name + ".json").exists()
    for s in saved[:2] + saved[3:]:
        assert s.path.exists() and s.path.with_name(s.path.name + ".json").exists()
        assert np.array_equal(read_mp4(s.path), frames[s.generation_id])
        assert session.store.generation(s.generation_id)["path"] == str(s.path.resolve())


def test_deleting_one_of_two_clips_written_to_one_path_keeps_the_file(tiny_folder, rushes_home, tmp_path):
    from engine.events import Result
    from engine.requests import GenerateRequest
    from engine.session import Session

    session = Session("test")
    out = tmp_path / "same.mp4"
    ids = [next(e.value.generation_id for e in session.generate(
        GenerateRequest(prompt="a red ball", model=str(tiny_folder), role="student", steps=1, seed=s), out=out)
        if isinstance(e, Result)) for s in (1, 2)]
    session.delete(ids[0])
    assert out.exists() and session.store.generation(ids[1])["path"] == str(out.resolve())
    session.delete(ids[1])
    assert not out.exists()
