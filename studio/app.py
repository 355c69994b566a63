"""The studio's Gradio app: builds the page and launches it with safe network defaults.

The UI renders engine events and never computes: every action builds one request dataclass
and hands it to the engine session.
"""

from __future__ import annotations

import gradio as gr

from engine import paths
from engine.session import Session
from studio import create


def build(session: Session) -> gr.Blocks:
    with gr.Blocks(title="rushes studio") as demo:
        gr.Markdown("# rushes studio\nFew-step video previews on the embedded **toyworld** model.")
        with gr.Tab("Create"):
            create.render(session)
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, auth: str | None = None, **kwargs) -> None:
    """Serve the studio; refuses to listen beyond this machine without a password."""
    if host not in ("127.0.0.1", "localhost", "::1") and not auth:
        raise ValueError(f"refusing to serve on {host} without --auth user:pass")
    credentials = tuple(auth.split(":", 1)) if auth else None
    if auth and (len(credentials) != 2 or not all(credentials)):
        raise ValueError("--auth must look like user:pass")
    demo = build(Session("studio"))
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(server_name=host, server_port=port, auth=credentials, max_file_size="20mb",
                allowed_paths=[str(paths.outputs())],
                blocked_paths=[str(paths.database()), str(paths.adapters()), str(paths.runs())], **kwargs)
