import json
import sqlite3
import subprocess
import sys

import pytest

from engine.cli import main


def _rows(home):
    db = home / "studio.db"
    if not db.exists():
        return 0
    return sqlite3.connect(db).execute("select count(*) from generations").fetchone()[0]


def test_generate_json_and_history(tiny_folder, rushes_home, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    code = main(["generate", "--prompt", "a red ball", "--model", str(tiny_folder), "--steps", "2",
                 "--seed", "5", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(out) and out.exists()
    assert {k: summary[k] for k in ("role", "steps", "nfe", "seed", "frames", "height", "width")} == {
        "role": "student", "steps": 2, "nfe": 2, "seed": 5, "frames": 5, "height": 32, "width": 32}
    assert set(summary["timings"]) == {"text_encode_s", "denoise_s", "decode_s", "total_s"}
    assert main(["history", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["seed"] == 5 and rows[0]["path"] == str(out.resolve())


@pytest.mark.parametrize("args, named", [
    (["--prompt", ""], "prompt"),
    (["--prompt", "x", "--height", "100"], "100"),
    (["--prompt", "x", "--frames", "0"], "frames"),
    (["--prompt", "x", "--frames", "1000000"], "1000000"),
    (["--prompt", "x", "--steps", "0"], "steps"),
    (["--prompt", "x", "--steps", "1000000"], "1000000"),
    (["--prompt", "x", "--lora", "nowhere/"], "nowhere"),
    (["--prompt", "x", "--out-format-typo"], None),
])
def test_bad_values_exit_nonzero_and_write_nothing(tiny_folder, rushes_home, tmp_path, capsys, args, named):
    out = tmp_path / "bad.mp4"
    argv = ["generate", "--model", str(tiny_folder), "--out", str(out), *args]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse rejects unknown flags itself
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    if named:
        assert err.startswith("error:") and named in err and "Traceback" not in err
        assert len(err.splitlines()) == 1
    assert not out.exists() and _rows(rushes_home) == 0


def test_lora_that_is_not_safetensors(tiny_folder, rushes_home, tmp_path, capsys):
    fake = tmp_path / "adapter"
    fake.mkdir()
    (fake / "pytorch_lora_weights.safetensors").write_bytes(b"\x80\x04not a real file at all")
    out = tmp_path / "x.mp4"
    code = main(["generate", "--prompt", "x", "--model", str(tiny_folder), "--lora", str(fake), "--out", str(out)])
    assert code == 2 and "safetensors" in capsys.readouterr().err
    assert not out.exists() and _rows(rushes_home) == 0


def test_console_script_reports_unknown_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "generate", "--prompt", "x",
                           "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "a.mp4")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown model") and "Traceback" not in proc.stderr


def test_eval_reports_the_independent_reader_beside_the_judge(rushes_home, capsys):
    assert main(["eval", "--model", "renderer", "--split", "public-heldout", "--prompts", "3", "--seeds", "1",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["semantic"] == 1.0 and report["readers"]["independent"]["semantic"] == 1.0
    assert report["readers"]["independent"]["opposite"] == 0.0


def test_a_step_count_or_size_the_folder_cannot_do_is_refused_before_any_weights_load(
        tiny_folder, rushes_home, tmp_path, capsys, monkeypatch):
    from engine import loading

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the request was checked")

    monkeypatch.setattr(loading, "load", no_load)
    for extra, named in ((["--steps", "3"], "no 3-step student (has: [1, 2, 4])"), (["--frames", "40"], "40"),
                         (["--height", "256"], "256")):
        code = main(["generate", "--prompt", "a red ball", "--model", str(tiny_folder), "--role", "student",
                     *extra, "--out", str(tmp_path / "x.mp4")])
        assert code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists() and _rows(rushes_home) == 0


def test_generate_json_separates_the_load_from_the_generation(tiny_folder, rushes_home, tmp_path, capsys,
                                                              monkeypatch):
    import time

    from engine import loading

    real_load = loading.load

    def slow_load(*a, **k):  # a load that takes as long as a real checkpoint's, relatively
        time.sleep(3.0)
        return real_load(*a, **k)

    monkeypatch.setattr(loading, "load", slow_load)
    code = main(["generate", "--prompt", "a red ball", "--model", str(tiny_folder), "--steps", "1",
                 "--out", str(tmp_path / "c.mp4"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["load_s"] >= 3.0
    timings = summary["timings"]
    parts = timings["text_encode_s"] + timings["denoise_s"] + timings["decode_s"]
    assert parts <= timings["total_s"] < summary["load_s"]  # the generation alone: the 3 s load is not in it
