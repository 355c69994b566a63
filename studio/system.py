"""System tab: the model in use, device, memory and the data folder."""

from __future__ import annotations

import gradio as gr

from engine.session import Session
from engine.system import describe


def render(session: Session, model: str, tab: gr.Tab) -> None:
    info = gr.JSON(label="System", elem_id="system-info")
    refresh = gr.Button("Refresh", elem_id="system-refresh")
    refresh.click(lambda: describe(session.engine, model), [], [info], api_name="system")
    tab.select(lambda: describe(session.engine, model), [], [info], api_name=False)  # filled when opened
