"""The teacher bake outlives its machine: a committed bf16 snapshot it resumes from, a clean stop."""

import json

import pytest
import torch

from engine import checkpoint
from engine.events import Progress
from engine.toyworld import teacher_bake, vae_bake


def _tiny(**changes) -> teacher_bake.TeacherBakeConfig:
    fields = dict(steps=4, batch=2, checkpoint_every=10, export_every=10, snapshot_every=2, warmup=1,
                  pool_capacity=16, new_clips_per_step=1, first_motions_until=2, restarts=(2,), resume_warmup=2)
    return teacher_bake.TeacherBakeConfig(**fields | changes)


def _out(tmp_path):
    out = tmp_path / "out"
    vae_bake.make_vae().save_pretrained(out / "vae", safe_serialization=True)
    return out


def test_snapshot_round_trips_in_bf16_and_a_dead_writers_temp_file_hides_nothing(tmp_path):
    weights = {"model": {"w": torch.randn(4, 3)}, "ema": {"w": torch.randn(4, 3)}}
    path = checkpoint.save_snapshot(tmp_path, 7, weights, {"loss": 0.5})
    (tmp_path / ".tmp-999-state.safetensors").write_bytes(b"half a file")  # a writer killed mid-write
    step, loaded, info = checkpoint.load_snapshot(tmp_path)
    assert (step, info) == (7, {"loss": 0.5}) and checkpoint.snapshot_step(tmp_path) == 7
    assert path.stat().st_size < 2 * 12 * 2 + 1024  # two bf16 tensors of 12 values and a header
    for name in weights:
        assert torch.equal(loaded[name]["w"], weights[name]["w"].to(torch.bfloat16).float())
    assert checkpoint.snapshot_step(tmp_path / "none") is None
    with pytest.raises(FileNotFoundError, match="no readable snapshot"):
        checkpoint.load_snapshot(tmp_path / "none")


def test_a_stop_checkpoints_and_snapshots_the_step_it_was_on(tmp_path):
    out, state = _out(tmp_path), tmp_path / "state"
    stop_after = iter([False, False, False, True])  # asked before each update: three run, then the stop
    events = list(teacher_bake.train(_tiny(), tmp_path / "work", out, state=state,
                                     stop=lambda: next(stop_after)))
    assert events == []  # no report due yet, nothing after the stop, and no export
    assert checkpoint.latest(tmp_path / "work")[0] == 3 == checkpoint.snapshot_step(state)
    step, weights, info = checkpoint.load_snapshot(state)
    assert set(weights) == {"model", "ema"} and info["recipe"] == teacher_bake.recipe(_tiny())
    assert not teacher_bake.bake_record(out)


def test_a_fresh_machine_resumes_from_the_committed_snapshot_with_a_rewarmed_optimizer(tmp_path):
    out, state = _out(tmp_path), tmp_path / "state"
    list(teacher_bake.train(_tiny(steps=2), tmp_path / "work", out, state=state))
    snap_step, snap, _ = checkpoint.load_snapshot(state)
    assert snap_step == 2
    # a new machine: no local checkpoint, no export; only the committed snapshot
    fresh_out = _out(tmp_path / "new")
    events = list(teacher_bake.train(_tiny(), tmp_path / "new-work", fresh_out, state=state))
    assert [e.step for e in events if isinstance(e, Progress)] == [4]
    assert checkpoint.snapshot_step(state) == 4  # the snapshot moved on, replaced in place
    assert sorted(p.name for p in state.iterdir()) == ["state.safetensors"]
    # the weights went on from the snapshot's, not from a new network
    resumed = checkpoint.latest(tmp_path / "new-work")[1]["ema"]
    moved = [(resumed[k] - snap["ema"][k]).abs().max().item() for k in snap["ema"]]
    assert max(moved) < 0.05 and max(moved) > 0


def test_a_snapshot_of_another_recipe_or_a_fresh_start_over_one_is_refused(tmp_path):
    out, state = _out(tmp_path), tmp_path / "state"
    list(teacher_bake.train(_tiny(steps=2), tmp_path / "work", out, state=state))
    with pytest.raises(ValueError, match=r"another recipe.*\['lr'\]"):
        list(teacher_bake.train(_tiny(lr=1e-3), tmp_path / "other", _out(tmp_path / "o"), state=state))
    with pytest.raises(FileExistsError, match="holds a teacher snapshot at step 2"):
        list(teacher_bake.train(_tiny(), tmp_path / "work", out, resume=False, state=state))


def test_the_newest_of_checkpoint_and_snapshot_is_resumed(tmp_path):
    """A local checkpoint newer than the snapshot wins (exact, with its optimizer); and export_latest
    writes whichever is newer."""
    out, state = _out(tmp_path), tmp_path / "state"
    cfg = _tiny(steps=3, checkpoint_every=1, snapshot_every=2)
    list(teacher_bake.train(cfg, tmp_path / "work", out, state=state))
    assert checkpoint.latest(tmp_path / "work")[0] == 3 and checkpoint.snapshot_step(state) == 3
    ship = tmp_path / "ship"
    teacher_bake.export_latest(tmp_path / "work", ship, state, cfg, vae_from=out / "vae")
    assert json.loads((ship / "bake.json").read_text())["teacher"]["step"] == 3


def test_after_a_snapshot_resume_the_lr_ramps_up_again():
    cfg = teacher_bake.TeacherBakeConfig(steps=100, first_steps=100, restarts=(), lr=1.0, min_lr=1.0, warmup=1,
                                         resume_warmup=4)
    assert [teacher_bake._lr(cfg, s, rewarm_from=50) for s in range(50, 55)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert teacher_bake._lr(cfg, 50) == 1.0  # an exact resume keeps the schedule


def test_a_machine_that_baked_no_teacher_goes_on_from_the_shipped_one():
    from engine import paths
    from engine.toyworld import bake

    scratch = bake.teacher_scratch()  # RUSHES_HOME is a fresh folder here
    shipped = teacher_bake.bake_record(paths.TOYWORLD)["teacher"]
    assert teacher_bake.bake_record(scratch)["teacher"] == shipped
    assert (scratch / "transformer" / "config.json").read_text() == (paths.TOYWORLD / "transformer" / "config.json").read_text()
    record = teacher_bake.bake_record(scratch) | {"teacher": {"step": shipped["step"] + 5}}
    (scratch / "bake.json").write_text(json.dumps(record))  # a bake that went on here
    assert teacher_bake.bake_record(bake.teacher_scratch())["teacher"]["step"] == shipped["step"] + 5
