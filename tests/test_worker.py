"""The studio's engine process (engine.worker): the same clips as the engine in this process,
cancels that land mid-clip, errors that cross intact, and a worker that dies without taking the
studio with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

from engine import jobs
from engine.events import Failed, Progress, Result
from engine.generate import Engine
from engine.requests import GenerateRequest
from engine.store import Store
from engine.tune.config import TuneConfig
from engine.worker import EngineProcess


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:  # the worker inherits the environment it starts in
        env.setenv("RUSHES_HOME", str(tmp_path_factory.mktemp("worker-home")))
        engine = EngineProcess()
    yield engine
    engine.close()


def _clip(engine, folder, **kw):
    events = list(engine.generate(GenerateRequest(prompt="a red circle", model=str(folder), seed=3, **kw)))
    assert isinstance(events[-1], Result), events[-1]
    return events


def test_the_worker_makes_the_clip_this_process_makes(worker, tiny_folder):
    theirs = _clip(worker, tiny_folder, steps=2)
    ours = _clip(Engine(), tiny_folder, steps=2)
    assert [type(e) for e in theirs] == [type(e) for e in ours]
    assert np.array_equal(theirs[-1].value.frames, ours[-1].value.frames)
    assert theirs[-1].value.meta["timesteps"] == ours[-1].value.meta["timesteps"]
    assert theirs[-1].value.latents.shape == ours[-1].value.latents.shape
    assert worker.preload(str(tiny_folder)).result(timeout=60) is None  # already loaded: a no-op


def test_errors_cross_with_their_type_and_the_bad_value(worker, tiny_folder, rushes_home):
    with pytest.raises(ValueError, match="999"):
        worker.estimate(GenerateRequest(prompt="x", model=str(tiny_folder), frames=999))
    failed = list(worker.generate(GenerateRequest(prompt="x", model=str(tiny_folder), frames=999)))
    assert isinstance(failed[-1], Failed) and "999" in failed[-1].message
    with pytest.raises(ValueError, match="nowhere"):
        worker.preload(str(rushes_home / "nowhere")).result(timeout=60)
    store = Store(rushes_home / "rushes.db")  # a Store travels by its path
    cfg = TuneConfig(model=str(tiny_folder), reward="ratings", steps=2)
    with pytest.raises(ValueError, match="at least"):
        worker.call(jobs.check_tune, cfg, store)
    est, free = worker.estimate(GenerateRequest(prompt="x", model=str(tiny_folder)))
    assert est.weights > 0 and free > 0


def test_a_cancel_or_a_caller_that_leaves_stops_the_clip_in_the_worker(worker, tiny_folder):
    cancel = threading.Event()
    long = GenerateRequest(prompt="x", model=str(tiny_folder), role="teacher", steps=400, seed=0)
    events = []
    for event in worker.generate(long, cancel):
        events.append(event)
        cancel.set()
    assert isinstance(events[-1], Failed) and events[-1].kind == "cancelled"
    assert sum(isinstance(e, Progress) for e in events) < 400
    stream = worker.generate(long)
    next(stream)
    stream.close()  # the caller goes away: the worker drops the clip and takes the next request
    _clip(worker, tiny_folder)


def test_a_worker_that_dies_fails_what_was_in_flight_and_the_next_request_starts_another(tiny_folder):
    engine = EngineProcess()
    try:
        first = engine._proc
        stream = engine.generate(GenerateRequest(prompt="x", model=str(tiny_folder), role="teacher", steps=400))
        assert isinstance(next(stream), Progress)
        first.kill()
        last = list(stream)[-1]
        assert isinstance(last, Failed) and last.kind == "crashed" and "exited" in last.message
        _clip(engine, tiny_folder)
        assert engine._proc is not first and engine.alive()
    finally:
        engine.close()
    assert not engine.alive()


def test_bad_runtime_options_name_the_value_here_and_in_the_worker(tiny_folder):
    engine = EngineProcess({"dtype": "float13"})
    try:
        with pytest.raises(ValueError, match="float13"):
            engine.options  # noqa: B018
        with pytest.raises(ValueError, match="float13"):
            engine.estimate(GenerateRequest(prompt="x", model=str(tiny_folder)))
    finally:
        engine.close()


# The pid is printed inside the try: the test's Ctrl-C may come as soon as it is read.
STUDIO = ("import time; from engine.worker import EngineProcess; e = EngineProcess(); e.call(getattr, 'device')\n"
          "try:\n    print(e._proc.pid, flush=True)\n    time.sleep(600)\nexcept KeyboardInterrupt:\n    pass")


def _studio_with_worker() -> tuple[subprocess.Popen, int]:
    """A stand-in studio process (own process group, Ctrl-C not ignored) and its worker's pid,
    once the worker serves."""
    studio = subprocess.Popen([sys.executable, "-c", STUDIO], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return studio, int(studio.stdout.readline())


def _gone(pid: int) -> None:
    deadline = time.monotonic() + 60
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the worker outlived the studio"
        time.sleep(0.2)


def test_the_worker_leaves_when_the_studio_dies():
    """kill -9 of the studio: the worker sees its socket close and exits, leaving no orphan."""
    studio, pid = _studio_with_worker()
    studio.kill()
    studio.wait()
    _gone(pid)


def test_ctrl_c_stops_the_studio_and_its_worker_quietly():
    """Ctrl-C reaches the whole process group: the studio stops, the worker leaves with its socket
    and prints no KeyboardInterrupt traceback of its own."""
    studio, pid = _studio_with_worker()
    os.killpg(studio.pid, signal.SIGINT)
    out, _ = studio.communicate(timeout=60)
    assert studio.returncode == 0 and "Traceback" not in out, out
    _gone(pid)


def test_close_stops_the_worker(tiny_folder):
    engine = EngineProcess()
    _clip(engine, tiny_folder)
    engine.close()
    assert not engine.alive()


def test_starting_the_worker_imports_nothing_heavy():
    """app.py starts the worker before gradio and torch; that overlap is the point of it."""
    code = "import sys, engine.worker; print(sorted({'torch', 'gradio', 'diffusers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
