"""The studio's Gradio app: builds the page and launches it with safe network defaults.

The UI renders engine events and never computes: every action builds one request dataclass
and hands it to the engine session. Heavy handlers share one "gpu" queue slot.
"""

from __future__ import annotations

import gradio as gr

from engine import paths
from engine.session import Session
from studio import create, library, system, tune

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
QUEUE_SIZE = 32  # waiting requests beyond this are told the queue is full


def build(session: Session, model: str = "toyworld", exposed: bool = False) -> gr.Blocks:
    """The page; `exposed` (served beyond this machine) disables custom-code rewards."""
    with gr.Blocks(title="rushes studio") as demo:
        gr.Markdown("# rushes studio\nFew-step video previews, side by side with the many-step teacher.")
        with gr.Tabs() as tabs:
            with gr.Tab("Create", id="create"):
                create_inputs = create.render(session, model, demo)
            with gr.Tab("Tune", id="tune"):
                tune.render(session, model, create_inputs["adapter"], allow_custom=not exposed)
            with gr.Tab("Library", id="library"):
                library.render(session, create_inputs, tabs)
            with gr.Tab("System", id="system"):
                system.render(session, model)
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return demo


def check_exposure(host: str, auth: str | None) -> tuple[str, str] | None:
    """Credentials to use; refuses to listen beyond this machine without a password."""
    if host not in LOCAL_HOSTS and not auth:
        raise ValueError(f"refusing to serve on {host} without --auth user:pass")
    if not auth:
        return None
    user, _, password = auth.partition(":")
    if not user or not password:
        raise ValueError("--auth must look like user:pass")
    return user, password


def launch_kwargs() -> dict:
    """File-serving limits: only outputs are reachable; the DB, adapters and runs never are."""
    return {"max_file_size": "20mb", "allowed_paths": [str(paths.outputs())],
            "blocked_paths": [str(paths.database()), str(paths.adapters()), str(paths.runs()),
                              str(paths.home() / "bake")]}


def studio_engine(options=None):
    """The studio's engine: it computes on a thread of its own, and Gradio's handler threads only
    pass its events on. `options` is an `engine.runtime.RuntimeOptions` (default: CPU, float32)."""
    from dataclasses import replace

    from engine.generate import Engine
    from engine.runtime import RuntimeOptions

    return Engine(replace(options or RuntimeOptions(), own_thread=True))


def launch(host: str = "127.0.0.1", port: int = 7860, auth: str | None = None, model: str = "toyworld",
           options=None, **kwargs) -> None:
    """Serve the studio with these `engine.runtime.RuntimeOptions`."""
    credentials = check_exposure(host, auth)
    engine = studio_engine(options)
    demo = build(Session("studio", engine=engine), model, exposed=host not in LOCAL_HOSTS)
    engine.preload(model)  # diffusers' imports and the load overlap the browser opening the page
    demo.launch(server_name=host, server_port=port, auth=credentials, **launch_kwargs(), **kwargs)
