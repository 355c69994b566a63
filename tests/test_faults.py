"""docs/ARCHITECTURE.md §6, faults 9-11: kill -9 during a tune and an export; many writers at once."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from engine import jobs, paths
from engine.export import sweep_partials
from engine.store import Store
from engine.tune.config import TuneConfig

ROOT = Path(__file__).resolve().parent.parent


def _wait(predicate, seconds=120, every=0.3):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def test_kill_9_during_a_tune_then_resume_to_the_end(tiny_folder, rushes_home, tmp_path):
    store = Store(paths.database())
    cfg = TuneConfig(model=str(tiny_folder), steps=8, batch=2, lrm_warmup=1, checkpoint_every=2,
                     prompts=["a red ball"], reward="contrast")
    run_id = jobs.start_tune(store, cfg, tmp_path / "adapter")
    assert _wait(lambda: (store.run(run_id)["step"] or 0) >= 3)
    pid = store.run(run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(timeout=30)
    assert jobs.sweep_interrupted(store) == [run_id]
    assert store.run(run_id)["status"] == "interrupted"
    assert sqlite3.connect(paths.database()).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    jobs.resume(store, run_id)
    assert _wait(lambda: store.run(run_id)["status"] in ("done", "error", "diverged"), 240)
    row = store.run(run_id)
    assert row["status"] == "done" and row["step"] == 8, row
    assert (tmp_path / "adapter" / "pytorch_lora_weights.safetensors").exists()
    steps = [m["step"] for m in store.metrics(run_id, "reward")]
    assert max(steps) == 9 and set(range(1, 10)) <= set(steps)  # every update (1 warm-up + 8) logged, some twice


def test_kill_9_during_export_leaves_no_partial_file_at_the_final_path(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "long.mp4"
    code = ("import numpy as np, sys; from engine.export import write_clip; "
            "f = np.random.default_rng(0).integers(0, 255, (4000, 64, 64, 3), dtype=np.uint8); "
            "print('start', flush=True); write_clip(f, 8, sys.argv[1], {})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    assert _wait(lambda: any(p.name.startswith(".partial-") for p in folder.iterdir()), 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not (folder / "long.mp4.json").exists()
    time.sleep(1)  # the orphaned encoder may still close its (temp-named) file
    assert sweep_partials(folder) >= 1
    assert list(folder.iterdir()) == []


def test_many_writers_and_a_trainer_lose_no_rows(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = store.start_session("load")
    run = store.create_run("tune", {})
    stop = threading.Event()
    trainer_steps = []

    def trainer():  # logs every step, as a tune does
        step = 0
        while not stop.is_set():
            step += 1
            store.log_metrics(run, step, {"loss": 1.0 / step, "reward": 0.1})
            trainer_steps.append(step)

    t = threading.Thread(target=trainer)
    t.start()
    errors = []

    def writer(k):
        try:
            for i in range(500):
                if i % 2:
                    store.log_generation(sid, {"prompt": f"{k}-{i}", "seed": i}, None)
                else:
                    store.rate(1, "thumb", 1) if i else store.log_generation(sid, {"prompt": "seed"}, None)
        except Exception as err:  # any "database is locked" would land here
            errors.append(err)

    writers = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    t.join()
    assert errors == []
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("select count(*) from generations").fetchone()[0] == 16 * 251
    assert db.execute("select count(*) from ratings").fetchone()[0] == 16 * 249
    assert db.execute("select count(*) from run_metrics").fetchone()[0] == 2 * len(trainer_steps)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_disk_full_is_a_clean_error_and_the_studio_keeps_serving(tiny_folder, tmp_path):
    """Row 14: $RUSHES_HOME/outputs on a 256 KiB tmpfs (a private mount namespace), filled up."""
    import json
    import shutil

    import pytest

    if not shutil.which("unshare"):
        pytest.skip("needs util-linux unshare for a private tmpfs mount")
    home = tmp_path / "home"
    (home / "outputs").mkdir(parents=True)
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=256k tmpfs {home / 'outputs'}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine allows no private tmpfs mount: {probe.stderr.strip()}")
    env = os.environ | {"RUSHES_HOME": str(home), "PYTHONPATH": str(ROOT)}
    cmd = (f"mount -t tmpfs -o size=256k tmpfs {home / 'outputs'} && "
           f"{sys.executable} {ROOT / 'tests' / 'disk_full_script.py'} {tiny_folder}")
    run = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in run.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads(lines[0][len("REPORT "):])
    assert "No space left on device" in report["full"] and "could not write" in report["full"]
    assert report["left_after_full"] == []  # no clip, sidecar or temp file
    assert report["integrity"] == "ok" and report["rows_after_full"] == 0
    assert "device" in report["system"]
    assert report["after_free"] > 0 and report["rows_after_free"] == 1
    assert report["files_after_free"] == [".json", ".mp4", ".png"]  # the clip, its sidecar, its thumbnail


def test_kill_9_during_distillation_then_resume_matches_an_uninterrupted_run(tiny_folder, tmp_path):
    """Row 9 for distillation: kill -9 after a checkpoint, then `rushes distill --resume`."""
    import json
    import random

    import torch

    from engine import checkpoint

    config = tmp_path / "distill.json"
    config.write_text(json.dumps({"steps": 10, "batch": 2, "frames": 5, "size": 32, "checkpoint_every": 2,
                                  "pool_capacity": 16, "fake_updates": 1, "student_steps": 2,
                                  "lrm_warmup": 0}))  # every term each update: a run slow enough to kill mid-way

    def command(out):
        return [sys.executable, "-m", "engine.cli", "distill", "--model", str(tiny_folder), "--config", str(config),
                "--out", str(out), "--resume"]

    def env(home):
        return os.environ | {"RUSHES_HOME": str(home), "PYTHONPATH": str(ROOT)}

    whole, split = tmp_path / "whole", tmp_path / "split"
    subprocess.run(command(whole / "out"), env=env(whole), cwd=ROOT, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(command(split / "out"), env=env(split), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    runs = split / "runs"
    # polled often and killed soon: the 8 updates left after the first checkpoint take about a second on a
    # fast machine, and a kill that came later found the run finished (seen locally once checkpoints stopped
    # being pulled from under the writer)
    assert _wait(lambda: any(checkpoint.latest(d) for d in runs.glob("distill-*")) if runs.exists() else False, 300,
                 every=0.05)
    time.sleep(random.uniform(0, 0.2))  # somewhere in the next updates (2 per checkpoint), maybe mid-checkpoint
    proc.kill()
    proc.wait(timeout=30)
    store = Store(split / "studio.db")
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert jobs.sweep_interrupted(store) == [1] and store.run(1)["status"] == "interrupted"
    assert not (split / "out" / "students" / "2step").exists()  # nothing exported from a killed run
    subprocess.run(command(split / "out"), env=env(split), cwd=ROOT, check=True, capture_output=True, timeout=600)
    assert store.run(2)["status"] == "done" and store.run(2)["step"] == 10
    (a_dir,), (b_dir,) = list((whole / "runs").glob("distill-*")), list(runs.glob("distill-*"))
    a, b = checkpoint.latest(a_dir), checkpoint.latest(b_dir)
    assert a[0] == b[0] == 10
    for key, value in a[1]["student"].items():
        assert torch.allclose(value, b[1]["student"][key], atol=1e-5), key
    assert (split / "out" / "students" / "2step" / "diffusion_pytorch_model.safetensors").exists()
