"""Create tab: prompt -> clip, rendering the engine's Progress / Preview / Result events."""

from __future__ import annotations

import gradio as gr

from engine import knobs
from engine.events import Failed, Preview, Progress, Result
from engine.requests import GenerateRequest
from engine.session import Session

STEP_PRESETS = {"student 1 step": ("student", 1), "student 2 steps": ("student", 2),
                "student 4 steps": ("student", 4), "teacher 50 steps": ("teacher", 50)}


def render(session: Session) -> None:
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="Prompt", value="a red ball moving right on a black background")
            negative = gr.Textbox(label="Negative prompt (teacher only)", value="")
            preset = gr.Radio(list(STEP_PRESETS), value="student 4 steps", label="Steps")
            seed = gr.Number(label="Seed (empty = random)", value=None, precision=0,
                             info=knobs.GENERATE["seed"].help)
            button = gr.Button("Generate", variant="primary")
        with gr.Column():
            video = gr.Video(label="Clip", autoplay=True, loop=True)
            status = gr.Markdown()

    def run(prompt_text, negative_text, preset_name, seed_value):
        role, steps = STEP_PRESETS[preset_name]
        seed_int = None if seed_value in (None, "") else int(seed_value)
        try:
            req = GenerateRequest(prompt=prompt_text, negative=negative_text, role=role, steps=steps,
                                  seed=seed_int).validate()
        except ValueError as err:
            raise gr.Error(str(err)) from None
        for event in session.generate(req):
            if isinstance(event, Progress):
                yield gr.update(), f"step {event.step}/{event.total}"
            elif isinstance(event, Failed):
                raise gr.Error(event.message)
            elif isinstance(event, Result):
                meta = event.value.clip.meta
                t = meta["timings"]
                yield str(event.value.path), (
                    f"seed **{meta['seed']}** · {meta['role']} {meta['steps']} steps · NFE {meta['nfe']} · "
                    f"text {t['text_encode_s']:.2f}s · denoise {t['denoise_s']:.2f}s · "
                    f"decode {t['decode_s']:.2f}s · total {t['total_s']:.2f}s")

    button.click(run, [prompt, negative, preset, seed], [video, status], api_name="generate")
