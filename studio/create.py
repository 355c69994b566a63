"""Create tab: prompt -> clip (with per-step previews), side by side with the teacher, rating.

Handlers only build requests and render engine events; every heavy handler runs in the one
"gpu" concurrency slot shared with tuning.
"""

from __future__ import annotations

from pathlib import Path

import re

import gradio as gr
import numpy as np

from engine import knobs, vocabulary
from engine.events import Failed, Preview, Progress, Result
from engine.requests import GenerateRequest
from engine.session import Session
from engine.worker import EngineGone
from studio import stream
from studio.fields import whole_number, whole_number_box

TEACHER_PRESETS = (50, 20)  # teacher step counts offered beside the model's students
PRESET = re.compile(r"^(student|teacher) (\d+) steps?$")


def preset_name(role: str, steps: int) -> str:
    return f"{role} {steps} step" + ("s" if steps != 1 else "")


def presets(students: list[int]) -> list[str]:
    """The Steps choices for a model: each student it has (1/2/4 for toyworld, 3 for FastWan), then
    the teacher at 50 and 20 steps."""
    return [preset_name("student", n) for n in sorted(students)] + [preset_name("teacher", n) for n in TEACHER_PRESETS]


def parse_preset(text: str) -> tuple[str, int]:
    """"student 4 steps" -> ("student", 4); gr.Error naming anything else."""
    match = PRESET.match(str(text or ""))
    if not match:
        raise gr.Error(f"steps preset must look like 'student 4 steps' or 'teacher 50 steps', got {text!r}")
    return match.group(1), int(match.group(2))
GPU = {"concurrency_id": "gpu", "concurrency_limit": 1}


def _strip(frames: np.ndarray) -> np.ndarray:
    """A preview image: the frames side by side, enlarged 2x."""
    strip = np.concatenate(list(frames), axis=1)
    return strip.repeat(2, axis=0).repeat(2, axis=1)


def _summary(saved) -> str:
    m, t = saved.clip.meta, saved.clip.meta["timings"]
    steps = f"{m['steps']} step" + ("s" if m["steps"] != 1 else "")
    return (f"**clip {saved.generation_id}** · seed **{m['seed']}** · {m['role']} {steps} · "
            f"NFE {m['nfe']} · text {t['text_encode_s']:.2f}s · denoise {t['denoise_s']:.2f}s · "
            f"decode {t['decode_s']:.2f}s · **total {t['total_s']:.2f}s**"
            + (f" · adapter {Path(m['lora']).name} x{m['lora_scale']:g}" if m.get("lora") else ""))


def parse_seed(seed) -> int | None:
    """The seed box's text as a seed: None (random) when empty."""
    return whole_number(seed, "seed (or empty for a random one)")


def _given(value) -> int | None:
    """A slider's value as the request's: None only when the field is empty (0 is a value, and
    a bad one: it is refused by name, not replaced by the model's default)."""
    return None if value is None or value == "" else int(value)


def build_request(model, prompt, negative, preset, seed, frames, size, adapter, scale) -> GenerateRequest:
    role, steps = parse_preset(preset)
    seed = parse_seed(seed)
    try:
        req = GenerateRequest(
            prompt=prompt, negative=negative or "", model=model, role=role, steps=steps,
            seed=seed, frames=_given(frames), height=_given(size), width=_given(size),
            lora=adapter or None, lora_scale=float(scale))
        return req.validate()
    except (ValueError, TypeError) as err:
        raise gr.Error(str(err)) from None


def estimate_text(session: Session, model, preset, frames, size) -> str:
    """The peak-memory estimate line shown under Generate (or why there is none)."""
    try:
        req = build_request(model, "estimate", "", preset, 0, frames, size, "", 1.0)
        est, free = session.engine.estimate(req)
    except (gr.Error, ValueError, FileNotFoundError, EngineGone) as err:
        return f"memory estimate unavailable: {err}"
    return f"Memory {est.describe(free)}"


def run_request(session: Session, req: GenerateRequest):
    """Yield (preview image or None, saved clip or None, status text) while the clip is made."""
    for event in session.generate(req):
        if isinstance(event, Progress):
            yield None, None, f"{req.role}: step {event.step}/{event.total}"
        elif isinstance(event, Preview):
            yield _strip(event.frames), None, f"{req.role}: step {event.step}/{event.total}"
        elif isinstance(event, Failed):
            raise gr.Error(event.message)
        elif isinstance(event, Result):
            yield None, event.value, _summary(event.value)


def render(session: Session, model: str, page: gr.Blocks) -> dict:
    """Lay out the tab and wire its events (`page`: the Blocks it is in); returns the inputs other
    tabs fill ("reuse")."""
    d = session.model_defaults(model)
    with gr.Row():
        with gr.Column(scale=1):
            picker = gr.Dropdown(session.model_names(model), value=model, label="Model", elem_id="model",
                                 info="the embedded toyworld, entries of models.toml, or a pipeline folder",
                                 allow_custom_value=True)
            prompt = gr.Textbox(label="Prompt", value="a red ball moving right on a black background",
                                elem_id="prompt")
            unknown = gr.Markdown(elem_id="unknown-words")
            if d["vocabulary"]:
                with gr.Accordion("Words this model knows", open=False, elem_id="vocabulary"):
                    gr.Markdown(vocabulary.describe(d["vocabulary"]), elem_id="vocabulary-words")
                    gr.Examples(d["vocabulary"].get("examples", []), [prompt], label="Example prompts")
            negative = gr.Textbox(label="Negative prompt (teacher only)", value="")
            choices = presets(d["students"])
            default = preset_name("student", 4 if 4 in d["students"] else min(d["students"])) if d["students"] \
                else "teacher 20 steps"
            preset = gr.Radio(choices, value=default, label="Steps", elem_id="preset",
                              info="students: the model's distilled few-step ones, no CFG; teacher: many steps with CFG")
            with gr.Row():
                seed = whole_number_box("Seed (empty = random)", "seed", "random", info=knobs.GENERATE["seed"].help)
                frames = gr.Slider(1, d["max_frames"], value=d["frames"], step=1, label="Frames", info=knobs.GENERATE["frames"].help)
                size = gr.Slider(16, d["max_side"], value=d["size"], step=16, label="Size (px)", info=knobs.GENERATE["height"].help)
            with gr.Row():
                adapter = gr.Dropdown(choices=[("none", "")], value="", label="Adapter", allow_custom_value=True,
                                      elem_id="adapter", info="tuned adapters appear here")
                scale = gr.Slider(-1, 2, value=1.0, step=0.05, label="Adapter scale",
                                  info=knobs.GENERATE["lora_scale"].help)
            with gr.Row():
                live = gr.Checkbox(label="Live (regenerate as you type)", value=False, elem_id="live")
                compare = gr.Checkbox(label="Side by side with the teacher", value=False, elem_id="compare")
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            # filled when the page opens (page.load below), not while it is built: estimating needs
            # the model, which loads as the page is served. A callable value would do the same but
            # shows Gradio's timer in place of this line.
            estimate = gr.Markdown("Memory: estimating once the model has loaded", elem_id="memory-estimate")
            stream_panel = stream.render(session, picker, prompt, seed, d["streams"])
        with gr.Column(scale=1):
            preview = gr.Image(label="Steps preview", height=110, elem_id="preview")
            with gr.Row():
                # output-only players: an interactive Video loads ffmpeg.wasm (its trim editor) on every clip
                video = gr.Video(label="Clip", autoplay=True, loop=True, elem_id="clip", interactive=False)
                teacher_video = gr.Video(label="Teacher", autoplay=True, loop=True, visible=False,
                                         elem_id="teacher-clip", interactive=False)
            status = gr.Markdown(elem_id="status")
            teacher_status = gr.Markdown(elem_id="teacher-status")
            with gr.Row():
                up = gr.Button("Thumb up", elem_id="thumb-up", size="sm")
                down = gr.Button("Thumb down", elem_id="thumb-down", size="sm")
                stars = gr.Radio([1, 2, 3, 4, 5], label="Stars", elem_id="stars")
            with gr.Row(visible=False) as ab_row:
                a_better = gr.Button("Student is better", size="sm", elem_id="a-better")
                b_better = gr.Button("Teacher is better", size="sm", elem_id="b-better")
                pair_button = gr.Button("Export side by side", size="sm", elem_id="export-pair")
            rated = gr.Markdown(elem_id="rated")
            with gr.Row():
                gif_button = gr.Button("Make GIF", size="sm")
                download = gr.File(label="Download", elem_id="download")
    clip_id = gr.State(None)
    teacher_id = gr.State(None)
    inputs = [picker, prompt, negative, preset, seed, frames, size, adapter, scale]

    def generate(model_, prompt_, negative_, preset_, seed_, frames_, size_, adapter_, scale_, compare_):
        req = build_request(model_, prompt_, negative_, preset_, seed_, frames_, size_, adapter_, scale_)
        req = GenerateRequest(**{**req.__dict__, "preview": True})
        keep = gr.update()
        saved = None
        hidden = gr.update(visible=compare_, value=None)
        for image, result, text in run_request(session, req):
            saved = result or saved
            path = str(result.path) if result else keep
            # a new request clears what belonged to the last one: its teacher clip, pair and ratings
            yield (keep if image is None else image, path, text,
                   result.generation_id if result else keep, hidden, "", gr.update(visible=False), None, path,
                   None, "")
        if not compare_:
            return
        teacher_req = GenerateRequest(**{**req.__dict__, "role": "teacher", "steps": None, "preview": False,
                                         "seed": saved.clip.meta["seed"]})
        student = (str(saved.path), _summary(saved), saved.generation_id)  # re-sent: the API keeps the last yield
        for _, result, text in run_request(session, teacher_req):
            if result is None:
                yield keep, keep, keep, keep, keep, text, keep, keep, keep, keep, keep
                continue
            ratio = result.clip.meta["timings"]["total_s"] / saved.clip.meta["timings"]["total_s"]
            text += f" · the teacher took **{ratio:.1f}x** the student's end-to-end time"
            yield (keep, student[0], student[1], student[2], gr.update(visible=True, value=str(result.path)),
                   text, gr.update(visible=True), result.generation_id, student[0], keep, keep)

    # the download link is an output of each handler, not a chained event: one queue round trip per clip
    outputs = [preview, video, status, clip_id, teacher_video, teacher_status, ab_row, teacher_id, download,
               stars, rated]
    button.click(generate, inputs + [compare], outputs, api_name="generate", **GPU)

    def live_generate(model_, prompt_, negative_, preset_, seed_, frames_, size_, adapter_, scale_, live_):
        if not live_ or not prompt_.strip():
            return (gr.update(),) * len(outputs)
        seed_ = parse_seed(seed_)
        req = build_request(model_, prompt_, negative_, preset_, 0 if seed_ is None else seed_,  # a steady preview
                            frames_, size_, adapter_, scale_)
        saved = [r for _, r, _ in run_request(session, req) if r][-1]
        # one clip on screen: the last request's teacher clip, pair and ratings go with it
        return (None, str(saved.path), _summary(saved), saved.generation_id, gr.update(visible=False, value=None),
                "", gr.update(visible=False), None, str(saved.path), None, "")

    for component in (prompt, preset, seed, frames, size, scale):
        component.change(live_generate, inputs + [live], outputs, api_name=False,
                         trigger_mode="always_last", show_progress="hidden", **GPU)

    def warn_unknown(model_, prompt_):
        """A warning (never a refusal) naming the prompt's words outside the model's vocabulary."""
        vocab = d["vocabulary"] if model_ == model else session.model_defaults(model_)["vocabulary"]
        return vocabulary.warning(prompt_ or "", vocab)

    for component in (prompt, picker):
        component.change(warn_unknown, [picker, prompt], [unknown], api_name=False, show_progress="hidden")
    page.load(warn_unknown, [picker, prompt], [unknown], api_name=False, show_progress="hidden")

    def model_presets(model_, preset_):
        """The Steps choices of the model picked (its own students), keeping the choice where it fits,
        and its Stream panel where it has a causal student."""
        facts = session.model_defaults(model_)
        choices = presets(facts["students"])
        return (gr.update(choices=choices, value=preset_ if preset_ in choices else choices[0]),
                gr.update(visible=facts["streams"]))

    picker.change(model_presets, [picker, preset], [preset, stream_panel], api_name=False, show_progress="hidden")

    def memory_estimate(model_, preset_, frames_, size_):
        return estimate_text(session, model_, preset_, frames_, size_)

    for component in (picker, preset, frames, size):
        component.change(memory_estimate, [picker, preset, frames, size], [estimate], api_name=False,
                         show_progress="hidden")
    page.load(memory_estimate, [picker, preset, frames, size], [estimate], api_name=False, show_progress="hidden")
    memory_api = gr.Button(visible=False)
    memory_api.click(memory_estimate, [picker, preset, frames, size], [estimate], api_name="memory_estimate")

    def rate(kind, value):
        def handler(gen_id):
            if gen_id is None:
                raise gr.Error("generate a clip first")
            try:
                session.rate(int(gen_id), kind, value)
            except ValueError as err:
                raise gr.Error(str(err)) from None
            return f"rated clip {gen_id}: {kind} {value}"
        return handler

    up.click(rate("thumb", 1), [clip_id], [rated], api_name="thumb_up")
    down.click(rate("thumb", -1), [clip_id], [rated], api_name="thumb_down")

    def star(gen_id, value):
        if value is None:
            return gr.update()
        return rate("stars", int(value))(gen_id)

    stars.input(star, [clip_id, stars], [rated], api_name="stars")

    def pair(winner_is_student):
        def handler(student_id, teacher_id_):
            if student_id is None or teacher_id_ is None:
                raise gr.Error("make a side-by-side pair first")
            win, lose = (student_id, teacher_id_) if winner_is_student else (teacher_id_, student_id)
            session.rate(int(win), "pair", 1, other_id=int(lose))
            return f"clip {win} preferred over clip {lose}"
        return handler

    a_better.click(pair(True), [clip_id, teacher_id], [rated], api_name="prefer_student")
    b_better.click(pair(False), [clip_id, teacher_id], [rated], api_name="prefer_teacher")

    def make_gif(gen_id):
        if gen_id is None:
            raise gr.Error("generate a clip first")
        try:
            return str(session.export_gif(int(gen_id)))
        except ValueError as err:
            raise gr.Error(str(err)) from None

    gif_button.click(make_gif, [clip_id], [download], api_name="gif")

    def export_pair(student_id, teacher_id_):
        if student_id is None or teacher_id_ is None:
            raise gr.Error("make a side-by-side pair first")
        try:
            return str(session.compare_export([int(student_id), int(teacher_id_)]))
        except ValueError as err:
            raise gr.Error(str(err)) from None

    pair_button.click(export_pair, [clip_id, teacher_id], [download], api_name="export_pair", **GPU)
    return {"model": picker, "prompt": prompt, "negative": negative, "preset": preset, "seed": seed, "frames": frames,
            "size": size, "adapter": adapter, "scale": scale, "video": video, "status": status, "clip_id": clip_id}

