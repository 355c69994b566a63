"""Tune tab: pick a reward, start / cancel / resume a background tune, watch its reward and
loss from the store, and find the saved adapters (which the Create tab's picker lists)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from engine import jobs, paths, settings
from engine.reward import models as model_rewards
from engine.reward.spec import names as reward_names
from engine.session import Session
from engine.tune.config import TuneConfig
from engine.worker import EngineGone
from studio.create import GPU
from studio.fields import whole_number, whole_number_box

REWARD_HELP = ("colourfulness, brightness, contrast, sharpness, motion, smoothness, compressibility, "
               "toyworld-semantic (the MiniBench judge), toyworld-soft (its aspects graded); palette: match a reference image; custom: your .py file; "
               "ratings: your thumbs, stars and A/B choices; clip-score / aesthetic: shown when their CLIP "
               "weights are in $RUSHES_HOME/reward-models/<name>")


UI_MAX_STEPS, UI_MAX_RANK = 1000, 64  # slider ends; the command line goes further (the settings table's ranges)


def reward_choices() -> list[str]:
    """Every reward this machine can score: model rewards only when their weights are present."""
    present = set(model_rewards.available())
    return [n for n in reward_names() if n not in model_rewards.MODEL_REWARDS or n in present]


def _runs(session: Session) -> list[list]:
    rows = []
    for r in session.store.runs(kind="tune", limit=20):
        cfg = json.loads(r["config"])
        rows.append([r["id"], r["status"], f"{r['step']}/{cfg.get('steps')}", cfg.get("reward"), r["message"] or ""])
    return rows


CURVES = {"reward": "#4c78a8", "lrm_reward": "#f58518", "loss": "#e45756"}  # colours named in the plot's label


def _warmup(config: dict) -> int:
    return TuneConfig.from_dict({k: v for k, v in config.items() if k != "out"}).warmup_updates


def _plot_rows(session: Session, run_id) -> pd.DataFrame | None:
    """The run's reward, LRM reward and loss per generator update; None (an empty plot) until the
    first. The reward model's warm-up (logged at updates 1..warm-up, before any loss) is left out:
    every update plotted carries all three curves, so the legend names what is drawn (the plot
    builds its chart from the first frame it is sent, and a curve missing from it is never drawn)."""
    row = None if run_id in (None, "") else session.store.run(int(run_id))
    if row is None:
        return None
    warmup = _warmup(json.loads(row["config"]))
    rows = [{"step": m["step"] - warmup, "value": m["value"], "metric": m["name"]}
            for m in session.store.metrics(int(run_id)) if m["name"] in CURVES and m["step"] > warmup]
    return pd.DataFrame(rows, columns=["step", "value", "metric"]) if rows else None


def status_text(row: dict) -> str:
    """One line for a tune run: its status, phase with the phase's own progress, the generator
    updates done, the run's smoothed ETA and its message, as the run wrote them."""
    config = json.loads(row["config"])
    parts = [f"run {row['id']}: **{row['status']}**"]
    if row["status"] in ("running", "cancelling") and row.get("phase"):
        progress = f" {row['phase_step']}/{row['phase_total']}" if row.get("phase_total") else ""
        parts.append(f"{row['phase']}{progress}")
    parts.append(f"tuning step {row['step']}/{config.get('steps')}")
    if row["status"] == "running" and row.get("eta_s") is not None:
        parts.append(f"ETA {row['eta_s']:.0f} s")
    if row["message"]:
        parts.append(row["message"])
    return " · ".join(parts)


def adapter_choices(session: Session) -> list[tuple[str, str]]:
    rows = session.store.adapters(limit=50)
    return [("none", "")] + [(f"{Path(a['path']).name} ({a['reward']})", a["path"]) for a in rows
                             if Path(a["path"]).exists()]


def render(session: Session, model: str, adapter_picker: gr.Dropdown, allow_custom: bool = True) -> None:
    with gr.Row():
        with gr.Column():
            reward = gr.Dropdown(reward_choices(), value="colourfulness", label="Reward", info=REWARD_HELP, elem_id="tune-reward")
            reference = gr.Image(label="Palette reference (for 'palette')", type="filepath", height=120)
            reward_file = gr.File(label="Reward file (for 'custom'): defines reward(frames, prompt)",
                                  file_types=[".py"], type="filepath")
            with gr.Row():  # defaults, ranges and help from the tune's settings table (engine/tune/config.py)
                s = settings.specs(TuneConfig)
                steps = gr.Slider(s["steps"].low, UI_MAX_STEPS, value=s["steps"].default, step=1, label="Steps",
                                  elem_id="tune-steps", info=f"{s['steps'].help} ({s['lrm_warmup'].default} updates)")
                rank = gr.Slider(s["rank"].low, UI_MAX_RANK, value=s["rank"].default, step=1, label="LoRA rank",
                                 info=s["rank"].help)
                lr = gr.Number(value=s["lr"].default, label="Learning rate", info=f"{s['lr'].help}, e.g. 1e-3",
                               elem_id="tune-lr")
            reg = gr.Radio(list(s["reg"].choices), value=s["reg"].default, label="Regulariser", elem_id="tune-reg",
                           info=f"keeps the student near where it started; {s['reg'].help}")
            prompts = gr.Textbox(label="Prompts (one a line)", value="", lines=3, elem_id="tune-prompts",
                                 info=f"{s['prompts'].help}; a model without a world of its own needs them")
            name = gr.Textbox(label="Adapter name", value="my-adapter", elem_id="tune-name")
            with gr.Row():
                start = gr.Button("Start tune", variant="primary", elem_id="tune-start")
                cancel = gr.Button("Cancel", elem_id="tune-cancel")
                resume = gr.Button("Resume", elem_id="tune-resume")
        with gr.Column():
            run_id = whole_number_box("Run", "tune-run", "the run to follow, cancel or resume")
            status = gr.Markdown(elem_id="tune-status")
            plot = gr.LinePlot(x="step", y="value", color="metric", height=320, color_map=CURVES, elem_id="tune-plot",
                               label="Per LoRA update: reward of the batch (blue), the reward model's estimate "
                                     "(orange), loss (red)")
            runs = gr.Dataframe(headers=["run", "status", "step", "reward", "message"], value=[],
                                interactive=False, label="Tune runs", elem_id="tune-runs")
    with gr.Row():
        compare_adapter = gr.Dropdown(adapter_choices(session), value="", label="Adapter", allow_custom_value=True,
                                      info="a saved adapter, or the path of any LoRA, to compare with the plain student",
                                      elem_id="tune-compare-adapter")
        compare_scale = gr.Slider(0, 2, value=1.0, step=0.1, label="Adapter scale")
        compare = gr.Button("Before / after", elem_id="tune-compare")
    grid = gr.Gallery(label="Before / after on fixed held-out prompts (seed 0): left the student, right with the adapter",
                      columns=2, height=420, elem_id="tune-grid")
    timer = gr.Timer(2.0)

    def start_run(reward_, reference_, file_, steps_, rank_, lr_, name_, reg_="base", prompts_=""):
        if reward_ == "custom" and not allow_custom:
            raise gr.Error("custom-code rewards are disabled while the studio is served beyond this machine")
        safe = "".join(c for c in (name_ or "adapter") if c.isalnum() or c in "-_") or "adapter"
        out = paths.adapters() / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            cfg = TuneConfig(model=model, reward=reward_, reference=reference_, reward_file=file_,
                             steps=int(steps_), rank=int(rank_), alpha=float(rank_), lr=float(lr_),
                             reg=reg_ or "base", device=session.engine.options.device,  # where the studio runs
                             prompts=[p.strip() for p in (prompts_ or "").splitlines() if p.strip()])
            session.engine.call(jobs.check_tune, cfg, session.store)  # where the model is loaded
        except (ValueError, EngineGone) as err:
            raise gr.Error(str(err)) from None
        new_id = jobs.start_tune(session.store, cfg, out)
        return str(new_id), f"started run {new_id} → {out.name}"

    start.click(start_run, [reward, reference, reward_file, steps, rank, lr, name, reg, prompts], [run_id, status],
                api_name="tune_start")

    def on_run(act, done: str):
        """A handler that applies `act` (jobs.cancel or jobs.resume) to the Run box's run."""
        def handler(rid):
            rid = whole_number(rid, "run id")
            if rid is None:
                raise gr.Error("no run selected")
            try:
                act(session.store, rid)
            except ValueError as err:
                raise gr.Error(str(err)) from None
            return f"{done} run {rid}"
        return handler

    cancel.click(on_run(jobs.cancel, "cancelling"), [run_id], [status], api_name="tune_cancel")
    resume.click(on_run(jobs.resume, "resumed"), [run_id], [status], api_name="tune_resume")

    def poll(rid):
        jobs.sweep_interrupted(session.store)
        text = ""
        try:
            rid = whole_number(rid, "run id")
        except gr.Error:  # a box being typed in: no run to show yet (the timer must not raise)
            rid = None
        row = None if rid is None else session.store.run(rid)
        if row is not None:
            text = status_text(row)
        elif rid is not None:
            text = f"no run with id {rid}"
        choices = gr.update(choices=adapter_choices(session))
        return text, _plot_rows(session, rid), _runs(session), choices, choices

    timer.tick(poll, [run_id], [status, plot, runs, adapter_picker, compare_adapter], api_name="tune_status",
               show_progress="hidden")

    def before_after(adapter, scale):
        if not adapter:
            raise gr.Error("pick a saved adapter to compare")
        try:
            pairs = session.before_after(adapter, model=model, scale=float(scale))
        except ValueError as err:
            raise gr.Error(str(err)) from None
        return [(str(path), label) for path, label in pairs]

    compare.click(before_after, [compare_adapter, compare_scale], [grid], api_name="tune_before_after", **GPU)

