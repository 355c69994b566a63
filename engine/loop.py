"""The one shell every training loop runs in: step, report, checkpoint, resume, cancel.

The VAE bake, the teacher bake, the distillation and the tune each give `run` what is theirs:
`step(i)` makes update i + 1 and returns its metrics, `save(done, metrics)` writes a checkpoint
(atomically; False when the weights went non-finite, which ends the run as diverged with
nothing saved), and `phase(done)` names the stage a finished update belongs to. The shell keeps
one order for all of them:

1. before each update, `should_stop()`: a stop checkpoints what is unsaved and ends the run
   with Failed("cancelled"), so a resume goes on from the same update;
2. the update; an exception listed in `skip` (a non-finite loss) skips it, and `max_skipped`
   in a row end the run as diverged;
3. a Progress with the update's metrics and an ETA from a smoothed time per update (an
   exponential average, so one slow update does not swing it);
4. the checkpoint, every `checkpoint_every` updates and at the end. Reporting comes first: a
   kill between the two repeats the update on resume instead of leaving it unlogged;
5. `after(done, metrics)`: what else the loop does at that update (export, snapshot,
   evaluation), whose events are passed on.

A resumed run starts at `start` (the caller loads its checkpoint) and reports the same update
numbers a run without a break would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine.events import Failed, Progress

ETA_SMOOTHING = 0.2  # weight of the newest update's duration in the smoothed seconds per update


@dataclass
class Phase:
    """Where a finished update stands: its stage name, its number within the stage and the stage's length."""
    stage: str
    step: int
    total: int


def run(step: Callable[[int], dict], *, start: int, total: int, save: Callable[[int, dict], bool],
        checkpoint_every: int, phase: Callable[[int], Phase], should_stop: Callable[[], bool] = lambda: False,
        skip: tuple[type[BaseException], ...] = (), max_skipped: int = 3, report_every: int = 1,
        after: Callable[[int, dict], Iterator] | None = None,
        on_stop: Callable[[int], None] | None = None) -> Iterator:
    """Run updates `start`..`total - 1`; yields Progress every `report_every` updates and at the
    end (and `after`'s events), then nothing more on success, or Failed("cancelled" / "diverged")
    as the last event. `on_stop(done)` runs on a stop, after its checkpoint."""
    saved, skipped, per_update, metrics = start, 0, None, {}
    done = start
    while done < total:
        if should_stop():
            if done > saved and not save(done, metrics):
                yield Failed("diverged: non-finite weights; nothing saved", kind="diverged")
                return
            if on_stop is not None:
                on_stop(done)
            yield Failed("cancelled", kind="cancelled")
            return
        began = time.perf_counter()
        try:
            metrics = step(done)
            skipped = 0
        except skip as err:
            skipped += 1
            done += 1
            if skipped >= max_skipped:
                yield Failed(f"diverged: {err} ({skipped} steps in a row); nothing saved", kind="diverged")
                return
            continue
        done += 1
        took = time.perf_counter() - began
        per_update = took if per_update is None else (1 - ETA_SMOOTHING) * per_update + ETA_SMOOTHING * took
        if done % report_every == 0 or done == total:
            where = phase(done)
            yield Progress(stage=where.stage, step=where.step, total=where.total, metrics=metrics,
                           eta_s=(total - done) * per_update)
        if done % checkpoint_every == 0 or done == total:
            if not save(done, metrics):
                yield Failed("diverged: non-finite weights; nothing saved", kind="diverged")
                return
            saved = done
        if after is not None:
            yield from after(done, metrics)


def one_phase(stage: str, total: int) -> Callable[[int], Phase]:
    """`phase` for a loop that is one stage from first update to last."""
    return lambda done: Phase(stage, done, total)
