"""Background jobs: a tune runs in its own spawned process, so it survives a closed browser
tab and never blocks the studio; status, metrics and checkpoints live in the store.

Tunes run one at a time: each loads its own copy of the model (the studio's engine keeps its
own for previews), so two at once would hold three copies. A tune started while another runs
waits, "queued" with its place in line in its message, and starts when the runs before it end.

Cancel = set the run's status to "cancelling" (the trainer polls it between steps; a queued run
stops waiting). A run whose process died (kill -9, reboot) is found by `sweep_interrupted` and
marked interrupted; `resume` starts it again from its last complete checkpoint.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import psutil

from engine.store import Store
from engine.tune.config import TuneConfig

ACTIVE = ("queued", "running", "cancelling")


QUEUE_POLL_S = 1.0


def wait_turn(store: Store, run_id: int, poll_s: float = QUEUE_POLL_S) -> bool:
    """Wait while earlier tunes are queued or running (this run "queued", its place in its
    message); False when the run was cancelled while it waited."""
    import time

    while True:
        sweep_interrupted(store)
        if store.run(run_id)["status"] == "cancelling":
            store.update_run(run_id, status="cancelled", message="cancelled while queued")
            return False
        ahead = _ahead(store, run_id)
        if not ahead:
            store.update_run(run_id, status="running", message="")
            if not _ahead(store, run_id, claimed=True):  # two that started at once: the earlier run goes first
                return True
            ahead = _ahead(store, run_id, claimed=True)
        store.update_run(run_id, status="queued", message=f"queued: {len(ahead)} tune(s) ahead (run "
                                                           f"{', '.join(map(str, sorted(ahead)))})")
        time.sleep(poll_s)


def _ahead(store: Store, run_id: int, claimed: bool = False) -> list[int]:
    """The tunes this one waits for: any other running (or cancelling) one, and queued ones with a
    smaller id; once it has `claimed` its turn, only running ones with a smaller id."""
    out = []
    for r in store.runs(kind="tune", statuses=ACTIVE):
        if r["id"] == run_id:
            continue
        if claimed:
            if r["status"] != "queued" and r["id"] < run_id:
                out.append(r["id"])
        elif r["status"] != "queued" or r["id"] < run_id:
            out.append(r["id"])
    return out


def _tune_main(run_id: int, cfg: dict, out: str, home: str) -> None:
    os.environ["RUSHES_HOME"] = home
    from engine import paths
    from engine.tune.run import run_tune

    if not wait_turn(Store(paths.database()), run_id):
        return
    for _ in run_tune(TuneConfig.from_dict(cfg), out, run_id=run_id):
        pass


def check_tune(engine, cfg: TuneConfig, store: Store) -> None:
    """ValueError naming what stops `cfg` from starting: a reward that cannot score, too few
    ratings for "my ratings" (a one-step fit), a student the model lacks. Runs on `engine`
    (`engine.call(check_tune, cfg, store)`), where the model is loaded."""
    loaded = engine.model(cfg.model)
    if not cfg.prompts:  # the model's world gives them, or the user must
        from engine import data

        data.for_model(loaded.info)
    steps = cfg.student_steps or loaded.default_student_steps()  # a teacher without a student: refused here
    loaded.student(steps)
    if cfg.reward == "ratings":
        from engine.reward.ratings import fit_ratings_model

        fit_ratings_model(store, loaded, steps=1, views=0, student_steps=steps)
    else:
        from engine.reward.spec import scorer

        scorer(cfg.reward_spec())


def start_tune(store: Store, cfg: TuneConfig, out: str | Path, run_id: int | None = None) -> int:
    """Start (or resume, given run_id) a tune in a spawned process; returns the run id."""
    if run_id is None:
        run_id = store.create_run("tune", cfg.to_dict() | {"out": str(out)}, status="queued")
    else:
        store.update_run(run_id, status="queued", message="")
    ctx = multiprocessing.get_context("spawn")
    home = str(store.path.parent)  # the child logs to the same database as the caller
    proc = ctx.Process(target=_tune_main, args=(run_id, cfg.to_dict(), str(out), home), daemon=False)
    proc.start()
    store.update_run(run_id, pid=proc.pid)
    return run_id


def _existing(store: Store, run_id: int) -> dict:
    row = store.run(run_id)
    if row is None:
        raise ValueError(f"no run with id {run_id}")
    return row


def cancel(store: Store, run_id: int) -> None:
    if _existing(store, run_id)["status"] in ACTIVE:
        store.update_run(run_id, status="cancelling")


def resume(store: Store, run_id: int) -> int:
    import json

    row = _existing(store, run_id)
    if row["status"] in ("running", "queued"):
        raise ValueError(f"run {run_id} is still {row['status']}")
    config = json.loads(row["config"])
    out = config.pop("out")
    return start_tune(store, TuneConfig.from_dict(config), out, run_id=run_id)


def sweep_interrupted(store: Store) -> list[int]:
    """Mark runs whose process is gone as interrupted; returns their ids."""
    found = []
    for row in store.runs(statuses=("queued", "running", "cancelling")):
        if not row["pid"] or not psutil.pid_exists(row["pid"]) or \
                psutil.Process(row["pid"]).status() == psutil.STATUS_ZOMBIE:
            store.update_run(row["id"], status="interrupted")
            found.append(row["id"])
    return found
