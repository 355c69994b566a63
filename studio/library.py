"""Library tab: every logged clip from SQLite as a gallery of first frames and a table, filtered
by prompt, model, role, adapter and rating; open, reuse, re-run or delete one."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from engine.session import Session
from engine.store import Store
from studio.create import GPU, preset_name, run_request
from studio.fields import whole_number, whole_number_box

COLUMNS = ["id", "when", "model", "role", "steps", "seed", "adapter", "prompt", "ratings", "total_s"]
WIDTHS = ["5%", "10%", "9%", "7%", "5%", "9%", "10%", "27%", "12%", "6%"]  # the prompt wraps in its own
PROMPT_CHARS = 90  # longer prompts are cut in the table (Open shows all of it)
ANY = ""


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _listing(session: Session, text: str, role: str, model: str, adapter: str, rating: str):
    """(gallery items, table rows) of the clips the filters keep, newest first."""
    import datetime as dt

    rows, items = [], []
    for g in session.library(text or "", role or "", model=model or "", adapter=adapter or "", rating=rating or ""):
        when = dt.datetime.fromtimestamp(g["created_at"]).strftime("%m-%d %H:%M:%S")
        said = ", ".join(g["ratings"])
        rows.append([g["id"], when, g["model"], g["role"], g["steps"], g["seed"],
                     Path(g["lora"]).name if g["lora"] else "", _short(g["prompt"], PROMPT_CHARS), said,
                     round(g["total_s"] or 0, 3)])
        if g["thumbnail"]:
            items.append((g["thumbnail"], f"#{g['id']} · {g['role']} {g['steps']} · {_short(g['prompt'], 40)}"
                                          + (f" · {said}" if said else "")))
    return items, rows


def _filter_choices(session: Session) -> tuple[dict, dict]:
    models = [ANY] + session.store.generation_values("model")
    adapters = [("any", ANY), ("none", "none")] + [(Path(p).name, p) for p in session.store.generation_values("lora")]
    return gr.update(choices=models), gr.update(choices=adapters)


def render(session: Session, create: dict, tabs: gr.Tabs, tab: gr.Tab) -> None:
    with gr.Row():
        text = gr.Textbox(label="Prompt contains", scale=3, elem_id="lib-filter")
        role = gr.Dropdown([ANY, "student", "teacher"], value=ANY, label="Role", scale=1, elem_id="lib-role")
        model = gr.Dropdown([ANY], value=ANY, label="Model", scale=1, elem_id="lib-model", allow_custom_value=True)
        adapter = gr.Dropdown([("any", ANY), ("none", "none")], value=ANY, label="Adapter", scale=1,
                              elem_id="lib-adapter", allow_custom_value=True)
        rating = gr.Dropdown([("any", ANY)] + [(k, k) for k in Store.RATING_FILTERS], value=ANY, label="Rating",
                             scale=1, elem_id="lib-rating")
        refresh = gr.Button("Refresh", scale=1, elem_id="lib-refresh")
    gallery = gr.Gallery(label="Clips (first frames; click one to pick it)", columns=8, height=300,
                         allow_preview=False, elem_id="library-gallery")
    table = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, elem_id="lib-table", wrap=True,
                         column_widths=WIDTHS)
    with gr.Row():
        chosen = whole_number_box("Clip id", "lib-id", "click a clip or a row, or type an id")
        open_button = gr.Button("Open", elem_id="lib-open")
        reuse = gr.Button("Reuse settings", elem_id="lib-reuse")
        rerun = gr.Button("Re-run", elem_id="lib-rerun")
        delete = gr.Button("Delete", variant="stop", elem_id="lib-delete")
    with gr.Row():
        video = gr.Video(label="Clip", autoplay=True, loop=True, elem_id="lib-video", interactive=False)
        meta = gr.JSON(label="Settings and timings")
    message = gr.Markdown(elem_id="lib-message")
    filters = [text, role, model, adapter, rating]

    def listing(*values):
        return _listing(session, *values)

    def opened(*values):
        return (*_listing(session, *values), *_filter_choices(session))

    refresh.click(opened, filters, [gallery, table, model, adapter], api_name="library")
    for box in (text,):
        box.submit(listing, filters, [gallery, table], api_name=False)
    for box in (role, model, adapter, rating):
        box.input(listing, filters, [gallery, table], api_name=False)
    tab.select(opened, filters, [gallery, table, model, adapter], api_name=False)  # opening lists what is new since

    def select(evt: gr.SelectData, rows):
        return str(rows.iloc[evt.index[0], 0] if hasattr(rows, "iloc") else rows[evt.index[0]][0])

    def pick(evt: gr.SelectData):
        return evt.value["caption"].split(" ", 1)[0].removeprefix("#")  # "#12 · student 4 · ..."

    gallery.select(pick, None, [chosen], api_name=False)
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
        preset = preset_name(req.role, req.steps or (50 if req.role == "teacher" else 4))
        seed = "" if req.seed is None else str(req.seed)  # the seed box is text
        return (req.model, req.prompt, req.negative, preset, seed, req.frames, req.height, req.lora or "",
                req.lora_scale, gr.Tabs(selected="create"))

    reuse.click(reuse_settings, [chosen], [create[k] for k in ("model", "prompt", "negative", "preset", "seed", "frames",
                                                              "size", "adapter", "scale")] + [tabs],
                api_name="reuse")

    def rerun_clip(gen_id, *values):
        gen_id = row_for(gen_id)["id"]
        req = session.request_for(gen_id)
        saved = [r for _, r, _ in run_request(session, req) if r][-1]
        return (str(saved.path), saved.clip.meta, f"re-ran clip {gen_id} as clip {saved.generation_id}",
                *_listing(session, *values))

    rerun.click(rerun_clip, [chosen, *filters], [video, meta, message, gallery, table], api_name="rerun", **GPU)

    def delete_clip(gen_id, *values):
        gen_id = row_for(gen_id)["id"]
        session.delete(gen_id)
        return None, None, f"deleted clip {gen_id} and its files", *_listing(session, *values)

    delete.click(delete_clip, [chosen, *filters], [video, meta, message, gallery, table], api_name="delete")
