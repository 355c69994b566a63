"""Whole-number input boxes that may be left empty: the seed, a clip id, a run id.

They are Textboxes, not Numbers: Gradio's Number shows and sends 0 for an empty value, so an
empty seed box gave every clip seed 0, and an empty run box made the tune tab poll a run 0 that
does not exist.
"""

from __future__ import annotations

import gradio as gr


def whole_number_box(label: str, elem_id: str, placeholder: str, info: str | None = None) -> gr.Textbox:
    """An empty one-line box for a whole number; read it with `whole_number`."""
    return gr.Textbox(label=label, value="", placeholder=placeholder, max_lines=1, info=info, elem_id=elem_id)


def whole_number(value, what: str) -> int | None:
    """The box's text as an int; None when empty; a gr.Error naming the text otherwise."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise gr.Error(f"{what} must be a whole number, got {text!r}") from None
