"""Library tab: every logged clip from SQLite, filterable; open, reuse, re-run or delete one."""

from __future__ import annotations

import json

import gradio as gr

from engine.session import Session
from studio.create import GPU, PRESETS, run_request
from studio.fields import whole_number, whole_number_box

COLUMNS = ["id", "when", "role", "steps", "seed", "prompt", "total_s", "rating"]


def _rows(session: Session, text: str, role: str) -> list[list]:
    import datetime as dt

    ratings = {r["generation_id"]: r["value"] for r in session.store.ratings(("stars", "thumb"))}
    rows = []
    for g in session.library(text or "", role or ""):
        when = dt.datetime.fromtimestamp(g["created_at"]).strftime("%m-%d %H:%M:%S")
        rows.append([g["id"], when, g["role"], g["steps"], g["seed"], g["prompt"],
                     round(g["total_s"] or 0, 3), ratings.get(g["id"], "")])
    return rows


def render(session: Session, create: dict, tabs: gr.Tabs, tab: gr.Tab) -> None:
    with gr.Row():
        text = gr.Textbox(label="Prompt contains", scale=3, elem_id="lib-filter")
        role = gr.Dropdown(["", "student", "teacher"], value="", label="Role", scale=1)
        refresh = gr.Button("Refresh", scale=1, elem_id="lib-refresh")
    table = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, elem_id="lib-table")
    with gr.Row():
        chosen = whole_number_box("Clip id", "lib-id", "click a row or type an id")
        open_button = gr.Button("Open", elem_id="lib-open")
        reuse = gr.Button("Reuse settings", elem_id="lib-reuse")
        rerun = gr.Button("Re-run", elem_id="lib-rerun")
        delete = gr.Button("Delete", variant="stop", elem_id="lib-delete")
    with gr.Row():
        video = gr.Video(label="Clip", autoplay=True, loop=True, elem_id="lib-video", interactive=False)
        meta = gr.JSON(label="Settings and timings")
    message = gr.Markdown(elem_id="lib-message")

    def listing(text_, role_):
        return _rows(session, text_, role_)

    refresh.click(listing, [text, role], [table], api_name="library")
    text.submit(listing, [text, role], [table], api_name=False)
    tab.select(listing, [text, role], [table], api_name=False)  # opening the tab lists what is new since

    def select(evt: gr.SelectData, rows):
        return str(rows.iloc[evt.index[0], 0] if hasattr(rows, "iloc") else rows[evt.index[0]][0])

    table.select(select, [table], [chosen], api_name=False)

    def row_for(gen_id):
        """The clip's row, or a gr.Error naming what is wrong with the box."""
        gen_id = whole_number(gen_id, "clip id")
        if gen_id is None:
            raise gr.Error("pick a clip id first")
        row = session.store.generation(gen_id)
        if row is None:
            raise gr.Error(f"no clip with id {gen_id}")
        return row

    def open_clip(gen_id):
        row = row_for(gen_id)
        return row["path"], json.loads(row["settings"])

    open_button.click(open_clip, [chosen], [video, meta], api_name="open_clip")

    def reuse_settings(gen_id):
        gen_id = row_for(gen_id)["id"]
        req = session.request_for(gen_id)
        preset = next((k for k, v in PRESETS.items() if v == (req.role, req.steps)),
                      "teacher 50 steps" if req.role == "teacher" else "student 4 steps")
        seed = "" if req.seed is None else str(req.seed)  # the seed box is text
        return (req.model, req.prompt, req.negative, preset, seed, req.frames, req.height, req.lora or "",
                req.lora_scale, gr.Tabs(selected="create"))

    reuse.click(reuse_settings, [chosen], [create[k] for k in ("model", "prompt", "negative", "preset", "seed", "frames",
                                                              "size", "adapter", "scale")] + [tabs],
                api_name="reuse")

    def rerun_clip(gen_id, text_, role_):
        gen_id = row_for(gen_id)["id"]
        req = session.request_for(gen_id)
        saved = [r for _, r, _ in run_request(session, req) if r][-1]
        return str(saved.path), saved.clip.meta, f"re-ran clip {gen_id} as clip {saved.generation_id}", \
            _rows(session, text_, role_)

    rerun.click(rerun_clip, [chosen, text, role], [video, meta, message, table], api_name="rerun", **GPU)

    def delete_clip(gen_id, text_, role_):
        gen_id = row_for(gen_id)["id"]
        session.delete(gen_id)
        return None, None, f"deleted clip {gen_id} and its files", _rows(session, text_, role_)

    delete.click(delete_clip, [chosen, text, role], [video, meta, message, table], api_name="delete")
