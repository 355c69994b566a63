"""docs/ARCHITECTURE.md §6, faults 1, 2 and 5: the file route, string paths posing as files, pickle files."""

import os
import pickle
import urllib.request
from pathlib import Path

import pytest

from engine.events import Failed
from engine.generate import Engine
from engine.requests import GenerateRequest
from engine.session import Session
from studio.app import build, launch_kwargs


class Marker:
    """Unpickling this writes a marker file: proof that pickle code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _evil(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(Marker(marker)))
    return path


def test_pickle_weights_in_a_pipeline_folder_are_refused(tiny_folder, tmp_path):
    import shutil

    folder = tmp_path / "evil-model"
    shutil.copytree(tiny_folder, folder)
    marker = tmp_path / "pwned"
    _evil(folder / "transformer" / "diffusion_pytorch_model.bin", marker)
    event = list(Engine().generate(GenerateRequest(prompt="x", model=str(folder))))[-1]
    assert isinstance(event, Failed) and "pickle" in event.message and not marker.exists()
    (folder / "transformer" / "diffusion_pytorch_model.bin").unlink()
    _evil(folder / "transformer" / "diffusion_pytorch_model.safetensors", marker)  # renamed pickle
    with pytest.raises(Exception):
        Engine().model(str(folder))
    assert not marker.exists()


def test_pickle_renamed_as_a_lora_is_refused(tiny_folder, tmp_path):
    marker = tmp_path / "pwned"
    lora = tmp_path / "lora"
    lora.mkdir()
    _evil(lora / "pytorch_lora_weights.safetensors", marker)
    event = list(Engine().generate(GenerateRequest(prompt="x", model=str(tiny_folder), lora=str(lora))))[-1]
    assert isinstance(event, Failed) and "safetensors" in event.message and not marker.exists()
    _evil(tmp_path / "adapter.ckpt", marker)
    event = list(Engine().generate(GenerateRequest(prompt="x", model=str(tiny_folder), lora=str(tmp_path / "adapter.ckpt"))))[-1]
    assert isinstance(event, Failed) and not marker.exists()


@pytest.fixture(scope="module")
def served(tiny_folder, tmp_path_factory):
    home = tmp_path_factory.mktemp("sec-home")
    os.environ["RUSHES_HOME"] = str(home)
    session = Session("security")
    demo = build(session, str(tiny_folder))
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs())
    yield url, home
    demo.close()


def _status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_file_route_serves_outputs_only(served):
    url, home = served
    (home / "outputs").mkdir(exist_ok=True)
    clip = home / "outputs" / "ok.txt"
    clip.write_text("fine")
    os.symlink(home / "studio.db", home / "outputs" / "link.db")
    db = str(home / "studio.db")
    assert (home / "studio.db").exists()
    for path in [db, f"{home}/outputs/../studio.db", f"{home}/outputs/%2e%2e/studio.db",
                 f"{home}/outputs/link.db", "/etc/passwd"]:
        code, body = _status(f"{url}gradio_api/file={path}")
        assert code != 200 and b"SQLite" not in body, path
    code, body = _status(f"{url}gradio_api/file={clip}")
    assert code == 200 and body == b"fine"


def test_string_paths_posing_as_files_are_refused(served):
    from gradio_client import Client

    client = Client(served[0], verbose=False)
    for bad in ({"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
                {"path": "http://127.0.0.1:9/x.png", "meta": {"_type": "gradio.FileData"}}):
        with pytest.raises(Exception):
            client.predict("palette", bad, None, 10, 4, 1e-3, "x", api_name="/tune_start")
    import sqlite3

    db = sqlite3.connect(served[1] / "studio.db")
    assert db.execute("select count(*) from sessions").fetchone()[0] >= 1  # the served database
    assert db.execute("select count(*) from runs").fetchone()[0] == 0  # no tune was started


def test_custom_code_rewards_are_disabled_when_exposed(tiny_folder, tmp_path):
    from gradio_client import Client

    demo = build(Session("exposed"), str(tiny_folder), exposed=True)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs())
    try:
        reward_file = tmp_path / "r.py"
        reward_file.write_text("def reward(f, p):\n    return 1.0\n")
        from gradio_client import handle_file

        with pytest.raises(Exception, match="disabled"):
            Client(url, verbose=False).predict("custom", None, handle_file(str(reward_file)), 10, 4, 1e-3, "x",
                                               api_name="/tune_start")
    finally:
        demo.close()


def test_oversize_upload_is_refused(served, tmp_path):
    import requests

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"0" * (21 * 2**20))
    response = requests.post(f"{served[0]}gradio_api/upload", files={"files": ("big.png", big.open("rb"))}, timeout=60)
    assert response.status_code == 413 or "exceeds" in response.text.lower()


def test_queue_flood_gets_queue_full_and_the_app_stays_responsive(served, tiny_folder):
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    client = Client(served[0], verbose=False)
    args = (str(tiny_folder), "a flood", "", "teacher 20 steps", 1, 5, 32, "", 1.0, False)

    def one(i):
        try:
            Client(served[0], verbose=False).predict(*args, api_name="/generate")
            return "ok"
        except Exception as err:
            return "full" if "queue" in str(err).lower() and "full" in str(err).lower() else f"error: {err}"

    with ThreadPoolExecutor(max_workers=60) as pool:
        outcomes = list(pool.map(one, range(60)))
    assert outcomes.count("full") > 0 and outcomes.count("ok") > 0, sorted(set(outcomes))
    assert all(o in ("ok", "full") for o in outcomes), sorted(set(outcomes))
    assert client.predict(api_name="/system")["device"] == "cpu"  # still serving


def test_the_studio_honours_gradio_server_port_and_takes_the_next_free_one(tiny_folder, tmp_path):
    """As Gradio does: $GRADIO_SERVER_PORT is where it starts looking, and a port another app holds
    is skipped (it used to fail on a busy 7860). Gradio reads the variable at import: a child process."""
    import socket
    import subprocess
    import sys

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    code = (f"from engine.generate import Engine\nfrom studio.app import launch\n"
            f"_, url, _ = launch(model={str(tiny_folder)!r}, engine=Engine(), prevent_thread_lock=True, quiet=True)\n"
            f"print(url, flush=True)\nimport os; os._exit(0)")
    env = dict(os.environ, GRADIO_SERVER_PORT=str(busy), RUSHES_HOME=str(tmp_path / "home"))
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                             cwd=Path(__file__).resolve().parent.parent)
    finally:
        holder.close()
    port = int(out.stdout.strip().rstrip("/").rsplit(":", 1)[1])
    assert port != busy and busy < port <= busy + 100, out.stdout + out.stderr
