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
# small clips (toyworld's are 64 px) shown enlarged keep their pixels sharp instead of a smoothed blur
CSS = "video, #preview img, #library-gallery img, #stream-frame img { image-rendering: pixelated; }"


def build(session: Session, model: str = "toyworld", exposed: bool = False) -> gr.Blocks:
    """The page; `exposed` (served beyond this machine) disables custom-code rewards."""
    with gr.Blocks(title="rushes studio") as demo:
        gr.Markdown("# rushes studio\nFew-step video previews, side by side with the many-step teacher.")
        with gr.Tabs() as tabs:
            with gr.Tab("Create", id="create"):
                create_inputs = create.render(session, model, demo)
            with gr.Tab("Tune", id="tune"):
                tune.render(session, model, create_inputs["adapter"], allow_custom=not exposed)
            with gr.Tab("Library", id="library") as library_tab:
                library.render(session, create_inputs, tabs, library_tab)
            with gr.Tab("System", id="system") as system_tab:
                system.render(session, model, system_tab)
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
    """File-serving limits (only outputs are reachable; the DB, adapters and runs never are) and
    the page's style."""
    return {"css": CSS, "max_file_size": "20mb", "allowed_paths": [str(paths.outputs())],
            "blocked_paths": [str(paths.database()), str(paths.adapters()), str(paths.runs()),
                              str(paths.home() / "bake")]}


def studio_engine(options=None):
    """The studio's engine: a worker process (`engine.worker`) that loads and computes, while this
    process serves the page. `options`: `engine.runtime.RuntimeOptions` or a dict of its fields
    (default: CPU, float32)."""
    from engine.worker import EngineProcess

    return EngineProcess(options)


def launch(host: str = "127.0.0.1", port: int | None = None, auth: str | None = None, model: str = "toyworld",
           options=None, engine=None, **kwargs):
    """Serve the studio with these `engine.runtime.RuntimeOptions`, or on an `engine` started and
    told to preload earlier (`python app.py` starts it before importing gradio, so the two imports
    overlap; it brings its own options). Without a `port`, as Gradio does: $GRADIO_SERVER_PORT or
    7860, or the next free port after it when that one is taken."""
    if engine is None:
        engine = studio_engine(options)
        engine.preload(model)
    elif options is not None:
        raise ValueError("pass runtime options or an engine started with them, not both")
    try:
        credentials = check_exposure(host, auth)
        engine.options  # noqa: B018 - bad runtime options are an error before anything is served
        demo = build(Session("studio", engine=engine), model, exposed=host not in LOCAL_HOSTS)
    except BaseException:
        engine.close()
        raise
    return demo.launch(server_name=host, server_port=port, auth=credentials, **launch_kwargs(), **kwargs)
