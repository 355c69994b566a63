"""The Create tab's Stream panel: play an endless clip, steer it by editing the prompt, stop and save.

Play starts a stream (`Session.stream`) in the "gpu" slot, paced to stay at most `LEAD_S` seconds
of video ahead of real time (so an edit reaches the screen that soon), and shows its frames one
by one at the clip's frame rate as they come. (Gradio's streaming video player needs ffprobe,
which the studio does not require; a frame view needs nothing.) The prompt box steers it: each
edit is kept for this browser session and the engine reads it before every chunk. Stop ends it
after the chunk in hand, and the whole stream is saved to the Library like any clip. Handlers
only pass values to the engine and render what comes back.
"""

from __future__ import annotations

import threading
import time

import gradio as gr

from engine.events import Failed, Result, StreamChunk
from engine.requests import StreamRequest
from engine.session import Session

LEAD_S = 1.0  # seconds of video the stream may be made ahead of what is on screen
SHOWN_PX = 256  # a small frame is drawn at least this tall, each pixel a square block (toyworld's are 64 px)


def _enlarged(frame):
    """A frame scaled up by a whole factor, nearest neighbour, so its smaller side is about SHOWN_PX."""
    k = max(1, SHOWN_PX // min(frame.shape[:2]))
    return frame if k == 1 else frame.repeat(k, axis=0).repeat(k, axis=1)
GPU = {"concurrency_id": "gpu", "concurrency_limit": 1}


class Streams:
    """What each browser session's running stream is steered and stopped through."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: dict[str, dict] = {}

    def start(self, key: str, prompt: str) -> dict:
        with self._lock:
            box = self._running[key] = {"prompt": prompt, "stop": threading.Event()}
        return box

    def end(self, key: str, box: dict) -> None:
        with self._lock:
            if self._running.get(key) is box:
                del self._running[key]

    def steer(self, key: str, prompt: str) -> bool:
        with self._lock:
            box = self._running.get(key)
        if box is None or not prompt.strip():
            return False
        box["prompt"] = prompt
        return True

    def stop(self, key: str) -> bool:
        with self._lock:
            box = self._running.get(key)
        if box is not None:
            box["stop"].set()
        return box is not None


def _status(chunk: StreamChunk, first_s: float) -> str:
    made = chunk.made_s + chunk.decode_s
    return (f"**streaming** · chunk {chunk.index + 1} ({chunk.start_s + len(chunk.frames) / chunk.meta['fps']:.1f} s "
            f"of video) made in {made:.2f} s for {len(chunk.frames) / chunk.meta['fps']:.2f} s of play · first chunk "
            f"after {first_s:.2f} s · prompt: *{chunk.prompt}*")


def render(session: Session, picker, prompt, seed, visible: bool) -> gr.Accordion:
    """The panel, under the Create tab's inputs (`picker`, `prompt`, `seed` are theirs); shown for
    a model with a causal student (`visible`); returns it, for the model picker to show or hide."""
    streams = Streams()
    with gr.Accordion("Stream: an endless clip you steer while it plays", open=False, elem_id="stream",
                      visible=visible) as panel:
        gr.Markdown("Play makes the clip chunk by chunk with the model's causal student; edit the prompt "
                    "while it plays and the next chunk follows it. Stop saves the whole stream to the Library.")
        with gr.Row():
            play = gr.Button("Play", variant="primary", elem_id="stream-play")
            stop = gr.Button("Stop and save", elem_id="stream-stop")
        player = gr.Image(label="Stream", interactive=False, elem_id="stream-frame", height=256)
        status = gr.Markdown(elem_id="stream-status")

    def run(model_, prompt_, seed_, request: gr.Request):
        from studio.create import parse_seed

        seed_ = parse_seed(seed_)
        try:
            req = StreamRequest(prompt=prompt_, seconds=None, seed=0 if seed_ is None else seed_, model=model_,
                                pace=LEAD_S).validate()
        except ValueError as err:
            raise gr.Error(str(err)) from None
        key = request.session_hash
        box = streams.start(key, prompt_)
        began, shown, first = time.perf_counter(), 0, None
        try:
            for event in session.stream(req, cancel=box["stop"], prompt_now=lambda: box["prompt"]):
                if isinstance(event, StreamChunk):
                    first = event.since_play_s if first is None else first
                    fps = event.meta["fps"]
                    for frame in event.frames:  # each frame at its time on the stream's clock
                        wait = began + first + shown / fps - time.perf_counter()
                        if wait > 0:
                            time.sleep(wait)
                        shown += 1
                        yield _enlarged(frame), _status(event, first)
                elif isinstance(event, Failed):
                    raise gr.Error(event.message)
                elif isinstance(event, Result):
                    saved = event.value
                    numbers = saved.clip.meta["stream"]
                    yield (gr.update(), f"**saved stream: clip {saved.generation_id}** · {numbers['seconds']:.1f} s · "
                           f"first chunk {numbers['first_chunk_s']:.2f} s · median chunk {numbers['chunk_s']:.2f} s · "
                           f"prompts: {', '.join(numbers['prompts'])}")
        finally:
            streams.end(key, box)

    play.click(run, [picker, prompt, seed], [player, status], api_name="stream", **GPU)

    def steer(prompt_, request: gr.Request):
        streams.steer(request.session_hash, prompt_ or "")

    prompt.change(steer, [prompt], None, api_name=False, show_progress="hidden", queue=False)

    def halt(request: gr.Request):
        if not streams.stop(request.session_hash):
            return "no stream is playing"
        return "stopping after the chunk in hand, then saving"

    stop.click(halt, None, [status], api_name="stream_stop", queue=False)
    return panel
