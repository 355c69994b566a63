"""Every studio endpoint through gradio_client, against a tiny model."""

import re
import sqlite3
from pathlib import Path

import pytest
from gradio_client import Client

from engine.session import Session
from studio.app import build, check_exposure, launch_kwargs, studio_engine

ARGS = ["", "student 4 steps", 3, 5, 32, "", 1.0]  # negative, preset, seed, frames, size, adapter, scale
MODEL = []  # the tiny folder, set by the studio fixture
ENGINE = []  # the studio's engine process, set by the studio fixture


@pytest.fixture(scope="module")
def studio(tiny_folder, tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("studio-home")
    os.environ["RUSHES_HOME"] = str(home)
    MODEL[:] = [str(tiny_folder)]
    ENGINE[:] = [studio_engine()]
    demo = build(Session("test", engine=ENGINE[0]), str(tiny_folder))
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None,
                            quiet=True, **launch_kwargs())
    yield url, home
    demo.close()
    ENGINE[0].close()


@pytest.fixture
def client(studio, monkeypatch):
    monkeypatch.setenv("RUSHES_HOME", str(studio[1]))
    return Client(studio[0], verbose=False)


def _count(home, table):
    return sqlite3.connect(home / "studio.db").execute(f"select count(*) from {table}").fetchone()[0]


def test_generate_rate_and_download(client, studio):
    out = client.predict(MODEL[0], "a red ball", *ARGS, False, api_name="/generate")
    video, status = out[1], out[2]
    assert Path(video["video"] if isinstance(video, dict) else video).exists()
    assert "seed **3**" in status and "student 4 steps" in status and "NFE 4" in status
    assert "thumb 1" in client.predict(api_name="/thumb_up")
    assert "stars 4" in client.predict(4, api_name="/stars")
    gif = client.predict(api_name="/gif")
    assert Path(gif).read_bytes()[:6] == b"GIF89a"
    assert _count(studio[1], "ratings") >= 2


def test_the_one_step_student_status_names_one_step(client):
    status = client.predict(MODEL[0], "a red ball", "", "student 1 step", 3, 5, 32, "", 1.0, False,
                            api_name="/generate")[2]
    assert "student 1 step ·" in status and "NFE 1" in status  # not "1 steps"


def test_a_killed_engine_process_is_replaced_on_the_next_clip(client):
    worker = ENGINE[0]._proc
    worker.kill()
    worker.wait()
    out = client.predict(MODEL[0], "a red ball", *ARGS, False, api_name="/generate")
    assert "student 4 steps" in out[2]
    assert ENGINE[0]._proc is not worker and ENGINE[0].alive()


def test_side_by_side_and_pair_choice(client):
    # the API returns (preview, clip, status, teacher clip, teacher status): states are not outputs
    out = client.predict(MODEL[0], "a blue square", *ARGS, True, api_name="/generate")
    assert "teacher" in out[4] and "the student's end-to-end time" in out[4]
    assert "student 4 steps" in out[2]  # the student's result survives the teacher phase
    assert "preferred over" in client.predict(api_name="/prefer_teacher")
    both = client.predict(api_name="/export_pair")  # one mp4: the student beside the teacher, captioned
    from engine.export import read_mp4

    frames = read_mp4(both)
    assert frames.shape[2] == 2 * 256 and frames.shape[1] > 256  # two clips enlarged to 256 px, a caption bar
    # a student-only clip replaces the pair: its ratings and A/B start empty, never the old teacher clip's
    out = client.predict(MODEL[0], "a blue square", *ARGS, False, api_name="/generate")
    assert out[-2] is None and out[-1] == "" and out[4] == ""  # stars, the rating line, the teacher status
    with pytest.raises(Exception, match="make a side-by-side pair first"):
        client.predict(api_name="/prefer_teacher")


def test_bad_input_is_a_clear_error_and_writes_nothing(client, studio):
    before = _count(studio[1], "generations")
    for prompt, seed, size, named in [("", 3, 32, "prompt"), ("ok", 3, 40, "40"), ("ok", "4.5", 32, "'4.5'")]:
        with pytest.raises(Exception, match=named):
            client.predict(MODEL[0], prompt, "", "student 4 steps", seed, 5, size, "", 1.0, False, api_name="/generate")
    assert _count(studio[1], "generations") == before


def test_an_empty_seed_box_draws_a_random_seed_each_clip(client, studio):
    seeds = set()
    for _ in range(3):
        status = client.predict(MODEL[0], "a red ball", "", "student 4 steps", "", 5, 32, "", 1.0, False,
                                api_name="/generate")[2]
        seeds.add(re.search(r"seed \*\*(\d+)\*\*", status).group(1))
    assert len(seeds) > 1  # three draws from [0, MAX_SEED] all alike would be a fixed seed


def test_library_open_reuse_rerun_delete(client, studio):
    client.predict(MODEL[0], "a green triangle", *ARGS, False, api_name="/generate")
    client.predict(api_name="/thumb_up")
    client.predict(4, api_name="/stars")  # both ratings shown, not the last one only
    gallery, table, *_ = client.predict("green", "", "", "", "", api_name="/library")
    rows = table["data"]
    assert rows and rows[0][7] == "a green triangle" and rows[0][8] == "thumb up, 4 stars"
    assert gallery[0]["caption"].startswith(f"#{rows[0][0]} · student 4") and gallery[0]["image"].endswith(".png")
    assert [r[0] for r in client.predict("green", "", "", "", "thumb up", api_name="/library")[1]["data"]] == [rows[0][0]]
    assert client.predict("green", "", "", "", "thumb down", api_name="/library")[1]["data"] == []
    assert client.predict("green", "teacher", "", "", "", api_name="/library")[1]["data"] == []
    gen_id = rows[0][0]
    video, settings = client.predict(gen_id, api_name="/open_clip")
    assert settings["seed"] == 3 and settings["prompt"] == "a green triangle"
    reused = client.predict(gen_id, api_name="/reuse")
    assert reused[0] == MODEL[0] and reused[1] == "a green triangle"
    assert reused[3] == "student 4 steps" and reused[4] == "3"  # the seed box is text
    _, meta, message, _, _ = client.predict(gen_id, "green", "", "", "", "", api_name="/rerun")
    assert meta["seed"] == 3 and "re-ran" in message
    path = Path(settings and sqlite3.connect(studio[1] / "studio.db").execute(
        "select path from generations where id = ?", [gen_id]).fetchone()[0])
    assert path.exists() and Path(str(path) + ".png").exists()
    _, _, message, _, table = client.predict(gen_id, "green", "", "", "", "", api_name="/delete")
    assert "deleted" in message and not path.exists() and not Path(str(path) + ".png").exists()
    assert gen_id not in [r[0] for r in table["data"]]


def test_id_boxes_may_be_empty_and_bad_text_is_named(client):
    status, plot, _, *_ = client.predict("", api_name="/tune_status")  # a fresh page's Run box
    assert status == "" and plot is None
    assert client.predict("9999", api_name="/tune_status")[0] == "no run with id 9999"
    assert client.predict("12a", api_name="/tune_status")[0] == ""  # being typed: the timer must not raise
    with pytest.raises(Exception, match="'12a'"):
        client.predict("12a", api_name="/tune_cancel")
    with pytest.raises(Exception, match="no run with id 9999"):
        client.predict("9999", api_name="/tune_resume")
    with pytest.raises(Exception, match="no run selected"):
        client.predict("", api_name="/tune_cancel")
    with pytest.raises(Exception, match="pick a clip id"):
        client.predict("", api_name="/open_clip")
    with pytest.raises(Exception, match="'4.5'"):
        client.predict("4.5", api_name="/open_clip")
    with pytest.raises(Exception, match="no clip with id 9999"):
        client.predict("9999", "", "", "", "", "", api_name="/delete")


def test_system_reports_model_and_device(client, tiny_folder):
    info = client.predict(api_name="/system")
    assert info["device"] == "cpu" and info["model_name"] == "tiny" and info["students"] == [1, 2, 4]
    assert info["engine_rss_gb"] > 0 and info["studio_rss_gb"] > 0  # two processes: both shown


def test_exposure_rules():
    assert check_exposure("127.0.0.1", None) is None
    with pytest.raises(ValueError, match="0.0.0.0"):
        check_exposure("0.0.0.0", None)
    assert check_exposure("0.0.0.0", "me:secret") == ("me", "secret")
    with pytest.raises(ValueError, match="user:pass"):
        check_exposure("0.0.0.0", "nopassword")


def test_a_refused_launch_stops_the_engine_it_was_given(tiny_folder):
    """`python app.py` starts the engine's worker before `launch` checks anything: a refusal (no
    password beyond this machine, bad runtime options) must not leave the worker running."""
    from engine.worker import EngineProcess
    from studio.app import launch

    for engine, host, match in ((EngineProcess(), "0.0.0.0", "0.0.0.0"),
                                (EngineProcess({"device": "cuda:x"}), "127.0.0.1", "cuda:x")):
        with pytest.raises(ValueError, match=match):
            launch(host=host, model=str(tiny_folder), engine=engine)
        assert not engine.alive()


def test_tune_start_status_cancel_and_adapter_listing(client, studio):
    import time

    run_id, message = client.predict("contrast", None, None, 400, 4, 1e-3, "crisp", api_name="/tune_start")
    assert "started run" in message
    deadline = time.time() + 120
    status = ""
    while time.time() < deadline:
        status, plot, runs, *_ = client.predict(run_id, api_name="/tune_status")
        if "running" in status and plot and plot["data"]:  # None until the run has a metric
            break
        time.sleep(1)
    assert "running" in status and {row[2] for row in plot["data"]} >= {"reward"}
    assert "cancelling" in client.predict(run_id, api_name="/tune_cancel")
    while time.time() < deadline and "cancelled" not in status:
        status, *_ = client.predict(run_id, api_name="/tune_status")
        time.sleep(1)
    assert "cancelled" in status
    with pytest.raises(Exception, match="sparkle"):
        client.predict("sparkle", None, None, 10, 4, 1e-3, "x", api_name="/tune_start")


def test_before_after_grid_compares_an_adapter_on_fixed_prompts(client, studio, tmp_path):
    from engine.cli import main

    adapter = tmp_path / "crisp"
    assert main(["tune", "--model", MODEL[0], "--reward", "contrast", "--steps", "2", "--batch", "2",
                 "--eval-prompts", "0", "--out", str(adapter)]) == 0
    before_rows = _count(studio[1], "generations")
    *_, choices = client.predict(None, api_name="/tune_status")  # the timer refreshes the pickers
    assert str(adapter) in str(choices)
    grid = client.predict(str(adapter), 1.0, api_name="/tune_before_after")
    assert len(grid) == 6 and _count(studio[1], "generations") == before_rows + 6
    labels = [item["caption"] for item in grid]
    assert [label.split(" · ")[0] for label in labels] == ["before", "after"] * 3
    assert labels[0].split(" · ", 1)[1] == labels[1].split(" · ", 1)[1]  # same prompt and seed in a row
    with pytest.raises(Exception, match="pick a saved adapter"):
        client.predict("", 1.0, api_name="/tune_before_after")


def test_the_tune_plot_draws_generator_updates_with_every_curve_its_legend_names(rushes_home):
    """The plot keeps the curves of the first frame it draws: the reward model's warm-up (reward
    only) is left out, so the first frame and every one after carry all three curves."""
    from studio.tune import CURVES, _plot_rows, status_text

    session = Session("test", engine=studio_engine())
    run = session.store.create_run("tune", {"steps": 3, "lrm_warmup": 2, "reward": "colourfulness", "out": "x"})
    assert _plot_rows(session, run) is None and _plot_rows(session, None) is None  # nothing to draw yet
    for update in (1, 2):  # the warm-up: the reward model fits alone
        session.store.log_metrics(run, update, {"reward": 0.5, "lrm_fit_loss": 0.1})
    assert _plot_rows(session, run) is None
    session.store.log_metrics(run, 3, {"reward": 0.6, "lrm_reward": 0.2, "loss": -0.2, "ft_loss": -0.2})
    frame = _plot_rows(session, run)
    assert sorted(frame["metric"]) == sorted(CURVES) and set(frame["step"]) == {1}  # generator update 1
    session.store.update_run(run, status="running", phase="tuning", phase_step=1, phase_total=3, step=1, eta_s=4.2)
    assert status_text(session.store.run(run)) == f"run {run}: **running** · tuning 1/3 · tuning step 1/3 · ETA 4 s"
