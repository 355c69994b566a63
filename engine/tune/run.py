"""A tune run end to end: store row, trainer, metrics, adapter export, reward before/after.

`run_tune` is what both `rushes tune` (in the foreground) and the studio's background jobs
(`engine.jobs`, a spawned process) execute; the run's checkpoints live in runs/tune-<id>.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine import loading, paths, runtime
from engine.events import Failed, Progress, Result
from engine.reward.spec import scorer
from engine.store import Store
from engine.tune.adapter_io import save_adapter
from engine.tune.config import TuneConfig
from engine.tune.trainer import ADAPTER, train


def work_dir(run_id: int) -> Path:
    return paths.runs() / f"tune-{run_id}"


def load_for_tune(model: str, device: str = "cpu") -> loading.LoadedModel:
    """The model a tune trains on, on `device` (ValueError naming it when absent), its samples
    decoded as the studio decodes them (bf16 where the CPU or GPU runs it natively; `python
    bench/vae.py`: ~2x faster than fp32 on a bf16 CPU). Weights stay float32: the LoRA trains in it."""
    opts = runtime.RuntimeOptions(device=device)
    return loading.load(model, opts.resolved_device(), decode_dtype=opts.torch_decode_dtype)


def true_reward(cfg: TuneConfig, lora: str | None, prompts: list[str], seeds: int = 2) -> float:
    """Mean pixel reward of final student samples (fixed prompts and seeds), with or without the adapter."""
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
    return float(np.mean(values))


def run_tune(cfg: TuneConfig, out: str | Path, run_id: int | None = None, eval_prompts: int = 4) -> Iterator:
    """Yields Progress events, then Result(summary dict) or Failed; logs everything to the store."""
    store = Store(paths.database())
    if run_id is None:
        run_id = store.create_run("tune", cfg.to_dict() | {"out": str(out)}, status="running")
    store.update_run(run_id, status="running", pid=os.getpid(), checkpoint=str(work_dir(run_id)))
    began = time.perf_counter()
    try:
        if cfg.reward != "ratings":
            scorer(cfg.reward_spec())  # bad reward: fail before loading
        loaded = load_for_tune(cfg.model, cfg.device)
        from engine.toyworld.render import sample_clip

        held = [sample_clip("public-heldout", i)[1] for i in range(eval_prompts)]
        eval_prompts = 0 if cfg.reward == "ratings" else eval_prompts  # no pixel reward to score with
        before = true_reward(cfg, None, held) if eval_prompts else None
        stop = lambda: store.run(run_id)["status"] == "cancelling"  # noqa: E731
        for event in train(cfg, loaded, work_dir(run_id), should_stop=stop):
            if isinstance(event, Progress):
                store.log_metrics(run_id, event.step, event.metrics)
                store.update_run(run_id, step=event.step)
                yield event
            elif isinstance(event, Failed):
                store.update_run(run_id, status=event.kind, message=event.message)
                yield event
                return
            elif isinstance(event, Result):
                tuner = event.value
                meta = {"reward": tuner.spec.describe(), "base_model": str(cfg.model), "student_steps": cfg.student_steps,
                        "steps": tuner.step, "rank": cfg.rank, "run_id": run_id}
                path = save_adapter(tuner.transformer, ADAPTER, cfg.rank, cfg.alpha, Path(out), meta)
                tuner.transformer.delete_adapters([ADAPTER])
                after = true_reward(cfg, str(path), held) if eval_prompts else None
                summary = {"adapter": str(path), "reward": tuner.spec.describe(), "reward_before": before,
                           "reward_after": after, "wall_s": round(time.perf_counter() - began, 1), "run_id": run_id}
                store.log_adapter(run_id, str(path), meta["reward"], str(cfg.model), summary)
                shown = " -> ".join("not measured" if v is None else f"{v:.4g}" for v in (before, after))
                store.update_run(run_id, status="done", message=f"reward {shown}")
                yield Result(summary)
    except ValueError as err:
        store.update_run(run_id, status="error", message=str(err))
        yield Failed(str(err))
    except (KeyboardInterrupt, SystemExit):
        store.update_run(run_id, status="interrupted")
        raise
