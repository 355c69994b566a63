"""Tune tab: pick a reward, start / cancel / resume a background tune, watch its reward and
loss from the store, and find the saved adapters (which the Create tab's picker lists)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from engine import jobs, paths
from engine.reward import models as model_rewards
from engine.reward.spec import NAMES
from engine.session import Session
from engine.tune.config import TuneConfig
from engine.worker import EngineGone
from studio.create import GPU
from studio.fields import whole_number, whole_number_box

REWARD_HELP = ("colourfulness, brightness, contrast, sharpness, motion, smoothness, compressibility, "
               "toyworld-semantic (the MiniBench judge), toyworld-soft (its aspects graded); palette: match a reference image; custom: your .py file; "
               "ratings: your thumbs, stars and A/B choices; clip-score / aesthetic: shown when their CLIP "
               "weights are in $RUSHES_HOME/reward-models/<name>")


def reward_choices() -> list[str]:
    """Every reward this machine can score: model rewards only when their weights are present."""
    present = set(model_rewards.available())
    return [n for n in NAMES if n not in model_rewards.MODEL_REWARDS or n in present]


def _runs(session: Session) -> list[list]:
    rows = []
    for r in session.store.runs(kind="tune", limit=20):
        cfg = json.loads(r["config"])
        rows.append([r["id"], r["status"], f"{r['step']}/{cfg.get('steps')}", cfg.get("reward"), r["message"] or ""])
    return rows


CURVES = {"reward": "#4c78a8", "lrm_reward": "#f58518", "loss": "#e45756"}  # colours named in the plot's label


def _plot_rows(session: Session, run_id) -> pd.DataFrame | None:
    """The run's reward and loss curves; None (an empty plot) until it has any. The plot builds its
    chart from the first frame it is sent and only swaps the data after: a chart built from an
    empty frame never draws a line, and a curve missing from the first frame (the loss starts after
    the LRM warm-up) is never drawn, so every curve is named first, as a NaN (which draws nothing),
    in one order, so each keeps its colour."""
    rows = [] if run_id in (None, "") else [
        {"step": m["step"], "value": m["value"], "metric": m["name"]}
        for m in session.store.metrics(int(run_id)) if m["name"] in CURVES]
    if not rows:
        return None
    named = [{"step": rows[0]["step"], "value": float("nan"), "metric": name} for name in CURVES]
    return pd.DataFrame(named + rows, columns=["step", "value", "metric"])


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
            with gr.Row():
                steps = gr.Slider(5, 1000, value=300, step=5, label="Steps", info="LoRA updates", elem_id="tune-steps")
                rank = gr.Slider(1, 64, value=8, step=1, label="LoRA rank", info="adapter capacity")
                lr = gr.Number(value=1e-3, label="Learning rate", info="e.g. 1e-3")
            reg = gr.Radio(["base", "vsd", "none"], value="base", label="Regulariser", elem_id="tune-reg",
                           info="keeps the student near where it started: base = distance to the frozen student; "
                                "vsd = distribution matching against the teacher (slower); none")
            name = gr.Textbox(label="Adapter name", value="my-adapter", elem_id="tune-name")
            with gr.Row():
                start = gr.Button("Start tune", variant="primary", elem_id="tune-start")
                cancel = gr.Button("Cancel", elem_id="tune-cancel")
                resume = gr.Button("Resume", elem_id="tune-resume")
        with gr.Column():
            run_id = whole_number_box("Run", "tune-run", "the run to follow, cancel or resume")
            status = gr.Markdown(elem_id="tune-status")
            plot = gr.LinePlot(x="step", y="value", color="metric", height=320, color_map=CURVES, elem_id="tune-plot",
                               label="Reward (blue), the LRM's reward (orange) and loss (red) per step")
            runs = gr.Dataframe(headers=["run", "status", "step", "reward", "message"], value=[],
                                interactive=False, label="Tune runs", elem_id="tune-runs")
    with gr.Row():
        compare_adapter = gr.Dropdown(adapter_choices(session), value="", label="Adapter",
                                      info="a saved adapter to compare with the plain student", elem_id="tune-compare-adapter")
        compare_scale = gr.Slider(0, 2, value=1.0, step=0.1, label="Adapter scale")
        compare = gr.Button("Before / after", elem_id="tune-compare")
    grid = gr.Gallery(label="Before / after on fixed held-out prompts (seed 0): left the student, right with the adapter",
                      columns=2, height=420, elem_id="tune-grid")
    timer = gr.Timer(2.0)

    def start_run(reward_, reference_, file_, steps_, rank_, lr_, name_, reg_="base"):
        if reward_ == "custom" and not allow_custom:
            raise gr.Error("custom-code rewards are disabled while the studio is served beyond this machine")
        safe = "".join(c for c in (name_ or "adapter") if c.isalnum() or c in "-_") or "adapter"
        out = paths.adapters() / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            cfg = TuneConfig(model=model, reward=reward_, reference=reference_, reward_file=file_,
                             steps=int(steps_), rank=int(rank_), alpha=float(rank_), lr=float(lr_),
                             reg=reg_ or "base", device=session.engine.options.device)  # where the studio runs
            session.engine.call(jobs.check_tune, cfg, session.store)  # where the model is loaded
        except (ValueError, EngineGone) as err:
            raise gr.Error(str(err)) from None
        new_id = jobs.start_tune(session.store, cfg, out)
        return str(new_id), f"started run {new_id} → {out.name}"

    start.click(start_run, [reward, reference, reward_file, steps, rank, lr, name, reg], [run_id, status],
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
            steps_total = json.loads(row["config"]).get("steps")
            eta = ""
            if row["status"] == "running" and row["step"]:
                rate = row["step"] / max(1e-6, row["updated_at"] - row["created_at"])
                eta = f" · ETA {max(0, steps_total - row['step']) / max(rate, 1e-6):.0f} s"
            text = f"run {rid}: **{row['status']}** · step {row['step']}/{steps_total}{eta} · {row['message'] or ''}"
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

