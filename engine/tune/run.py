"""A tune run end to end: store row, trainer, metrics, adapter export, reward before/after.

`run_tune` is what both `rushes tune` (in the foreground) and the studio's background jobs
(`engine.jobs`, a spawned process) execute; the run's checkpoints live in runs/tune-<id>.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine import data, loading, paths, runtime
from engine.events import Failed, Progress, Result
from engine.reward.spec import scorer
from engine.store import Store
from engine.tune.adapter_io import save_adapter
from engine.tune.config import TuneConfig
from engine.tune.trainer import ADAPTER, PHASES, train


def work_dir(run_id: int) -> Path:
    return paths.runs() / f"tune-{run_id}"


def load_for_tune(model: str, device: str = "cpu") -> loading.LoadedModel:
    """The model a tune trains on, on `device` (ValueError naming it when absent), its samples
    decoded as the studio decodes them (bf16 where the CPU or GPU runs it natively; `python
    bench/vae.py`: ~2x faster than fp32 on a bf16 CPU). Weights stay float32: the LoRA trains in it."""
    opts = runtime.RuntimeOptions(device=device)
    return loading.load(model, opts.resolved_device(), decode_dtype=opts.torch_decode_dtype)


def true_reward(cfg: TuneConfig, lora: str | None, prompts: list[str], seeds: int = 2,
                on_clip: Callable[[int, int], None] = lambda done, total: None) -> float:
    """Mean pixel reward of final student samples (fixed prompts and seeds), with or without the
    adapter; `on_clip(done, total)` after each clip."""
    from engine.generate import Engine
    from engine.requests import GenerateRequest

    score, engine, values = scorer(cfg.reward_spec()), Engine(runtime.RuntimeOptions(device=cfg.device)), []
    for prompt in prompts:
        for seed in range(seeds):
            req = GenerateRequest(prompt=prompt, model=cfg.model, role="student", steps=cfg.student_steps,
                                  seed=seed, lora=lora)
            event = list(engine.generate(req))[-1]
            if isinstance(event, Failed):
                raise ValueError(event.message)
            values += score([event.value.frames], [prompt])
            on_clip(len(values), len(prompts) * seeds)
    return float(np.mean(values))


def outcome(before: float | None, after: float | None) -> str:
    """The run's closing message: the reward's change on the held-out prompts, and a plain word
    when the adapter left it where it was."""
    if before is None or after is None:
        return "reward not measured (the ratings reward has no per-clip score)"
    shown = f"reward {before:.4g} -> {after:.4g}"
    if abs(after - before) < 1e-4 * max(1.0, abs(before)):
        return (f"{shown}: unchanged; the adapter did not move the reward on the held-out prompts "
                f"(more steps or a higher learning rate may)")
    return shown


def run_tune(cfg: TuneConfig, out: str | Path, run_id: int | None = None, eval_prompts: int = 4) -> Iterator:
    """Yields Progress events, then Result(summary dict) or Failed; logs everything to the store.

    The run row carries its phase as it goes ("loading the model", "measuring the reward before",
    "fitting the reward model", "tuning", "saving the adapter", "measuring the reward after"), the
    phase's own step and total, and the smoothed ETA. Metrics are logged at the run's update
    number (warm-up updates first, then generator updates); `step` counts generator updates and
    never goes back: a run resumed from an older checkpoint says which updates it redoes."""
    store = Store(paths.database())
    if run_id is None:
        run_id = store.create_run("tune", cfg.to_dict() | {"out": str(out)}, status="running")
    high = store.run(run_id)["step"] or 0  # generator updates reported before (a resumed run)
    store.update_run(run_id, status="running", pid=os.getpid(), checkpoint=str(work_dir(run_id)))
    began = time.perf_counter()

    def phase(name: str, done: int = 0, total: int = 0, **fields) -> None:
        store.update_run(run_id, phase=name, phase_step=done, phase_total=total, **fields)

    try:
        if cfg.reward != "ratings":
            scorer(cfg.reward_spec())  # bad reward: fail before loading
        phase("loading the model")
        loaded = load_for_tune(cfg.model, cfg.device)
        cfg = replace(cfg, student_steps=cfg.student_steps or loaded.default_student_steps())  # the model's own
        source = None if cfg.prompts else data.for_model(loaded.info)
        train_prompts = list(cfg.prompts) or source.prompts("train")
        held = list(cfg.prompts)[:eval_prompts] if source is None else source.prompts("heldout", eval_prompts)
        eval_prompts = 0 if cfg.reward == "ratings" else eval_prompts  # no pixel reward to score with
        before = true_reward(cfg, None, held, on_clip=lambda d, t: phase("measuring the reward before", d, t)
                             ) if eval_prompts else None
        stop = lambda: store.run(run_id)["status"] == "cancelling"  # noqa: E731
        warmup = cfg.warmup_updates
        for event in train(cfg, loaded, work_dir(run_id), train_prompts, should_stop=stop):
            if isinstance(event, Progress):
                tuning = event.stage == PHASES["tune"]
                store.log_metrics(run_id, warmup + event.step if tuning else event.step, event.metrics)
                name = event.stage
                if tuning and event.step < high:
                    name = f"tuning (resumed from a checkpoint: redoing updates to {high})"
                phase(name, event.step, event.total, eta_s=event.eta_s,
                      **({"step": max(high, event.step)} if tuning else {}))
                yield event
            elif isinstance(event, Failed):
                store.update_run(run_id, status=event.kind, message=event.message, eta_s=None)
                yield event
                return
            elif isinstance(event, Result):
                tuner = event.value
                phase("saving the adapter", eta_s=None)
                meta = {"reward": tuner.spec.describe(), "base_model": str(cfg.model), "student_steps": cfg.student_steps,
                        "steps": tuner.step - warmup, "rank": cfg.rank, "run_id": run_id,
                        "heldout_prompts": held[:3]}  # what a before/after shows where the model has no world
                path = save_adapter(tuner.transformer, ADAPTER, cfg.rank, cfg.alpha, Path(out), meta)
                tuner.transformer.delete_adapters([ADAPTER])
                after = true_reward(cfg, str(path), held, on_clip=lambda d, t: phase("measuring the reward after", d, t)
                                    ) if eval_prompts else None
                summary = {"adapter": str(path), "reward": tuner.spec.describe(), "reward_before": before,
                           "reward_after": after, "wall_s": round(time.perf_counter() - began, 1), "run_id": run_id}
                store.log_adapter(run_id, str(path), meta["reward"], str(cfg.model), summary)
                message = outcome(before, after)
                phase("done")
                store.update_run(run_id, status="done", message=message)
                yield Result(summary | {"message": message})
    except ValueError as err:
        store.update_run(run_id, status="error", message=str(err), eta_s=None)
        yield Failed(str(err))
    except (KeyboardInterrupt, SystemExit):
        store.update_run(run_id, status="interrupted", eta_s=None)
        raise
