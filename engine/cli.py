"""`rushes` command line: a thin shell over the engine's Python API.

    rushes generate --prompt "a red ball moving left on a black background" --out clip.mp4 --json
    rushes history --json
    rushes bake toyworld --stage vae --resume
    rushes eval --role teacher --split public-heldout --json
    rushes stream --prompt "a red circle moving right" --switch "4:a blue square rising" --seconds 8 --json
    rushes serve --port 7860

Bad values exit with status 2 and one line naming the value; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine import knobs

ERROR_EXIT = 2


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate one clip and save it (logged to the studio DB)",
                       description="Example: rushes generate --prompt 'a red ball moving left on a "
                                   "black background' --steps 4 --seed 7 --out clip.mp4 --json")
    p.add_argument("--prompt", required=True, help="what the clip shows")
    p.add_argument("--negative", default="", help="what to avoid (teacher only), e.g. 'blurry'")
    p.add_argument("--model", default="toyworld", help="built-in name or pipeline folder (default toyworld)")
    p.add_argument("--role", default="auto", choices=["auto", "student", "teacher"],
                   help="student: few steps, no CFG; teacher: many steps with CFG; auto: student if the model has one")
    p.add_argument("--solver", default=None, choices=["euler", "unipc"],
                   help="teacher ODE solver (default: the checkpoint's own scheduler's: unipc for Wan2.1, euler for "
                        "toyworld)")
    for knob in knobs.GENERATE.values():
        flag = "--" + knob.name.replace("_", "-")
        p.add_argument(flag, type=knob.type, default=knob.default, help=knob.help)
    p.add_argument("--lora", default=None, help="adapter folder or .safetensors file (diffusers LoRA)")
    p.add_argument("--out", required=True, help="output file, .mp4 or .gif")
    p.add_argument("--json", action="store_true", help="print one JSON object describing the clip")
    _add_runtime(p)


def _add_runtime(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime (GPU memory and speed)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weights/compute dtype (default float32; bfloat16 is the fast choice on a GPU)")
    g.add_argument("--compile", action="store_true", help="torch.compile the repeated transformer blocks")
    g.add_argument("--offload", action="store_true", help="model CPU offload: each model on the device only while it runs")
    g.add_argument("--vae-tiling", action="store_true", help="decode in spatial tiles (less memory at large sizes)")
    g.add_argument("--vae-slicing", action="store_true", help="decode one clip/frame at a time")
    g.add_argument("--decode-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="VAE decode dtype (default auto: bf16 where the device runs it natively)")


def _runtime_fields(args) -> dict:
    return {"device": args.device, "dtype": args.dtype, "compile": args.compile, "offload": args.offload,
            "vae_tiling": args.vae_tiling, "vae_slicing": args.vae_slicing, "decode_dtype": args.decode_dtype}


def _runtime(args):
    from engine.runtime import RuntimeOptions

    return RuntimeOptions(**_runtime_fields(args))


def _generate(args) -> int:
    import time

    from engine.events import Failed, Result
    from engine.generate import Engine, precheck
    from engine.requests import GenerateRequest
    from engine.session import Session

    req = GenerateRequest(prompt=args.prompt, negative=args.negative, model=args.model, role=args.role,
                          steps=args.steps, seed=args.seed, frames=args.frames, height=args.height,
                          width=args.width, guidance=args.guidance, solver=args.solver, lora=args.lora,
                          lora_scale=args.lora_scale)
    precheck(req)  # what the values and the model folder can refuse, before loading anything
    engine = Engine(_runtime(args))
    began = time.perf_counter()
    engine.model(req.model)  # the load, timed apart: timings.total_s is the generation alone
    load_s = time.perf_counter() - began
    for event in Session("cli", engine=engine).generate(req, out=args.out):
        if isinstance(event, Failed):
            print(f"error: {event.message}", file=sys.stderr)
            return ERROR_EXIT
        if isinstance(event, Result):
            saved = event.value
            meta = saved.clip.meta
            summary = {"path": str(saved.path), **{k: meta[k] for k in (
                "model", "role", "steps", "nfe", "seed", "frames", "height", "width")},
                "load_s": round(load_s, 3), "timings": meta["timings"], "generation_id": saved.generation_id}
            print(json.dumps(summary) if args.json else f"wrote {saved.path} (seed {meta['seed']})")
    return 0


def _history(args) -> int:
    from engine import paths
    from engine.store import Store

    rows = Store(paths.database()).generations(limit=args.limit)
    if args.json:
        print(json.dumps(rows, default=str))
    else:
        for r in rows:
            print(f"{r['id']:>5}  {r['role']:<7} {r['steps']:>3} steps  seed {r['seed']:<10} "
                  f"{r['total_s']:.2f}s  {r['prompt'][:50]!r}  {r['path']}")
    return 0


def _stop_on_signal():
    """A stop flag raised by the first SIGTERM or Ctrl-C (the bake then checkpoints and returns);
    a second one interrupts at once."""
    return _signal_event().is_set


def _signal_event():
    """The event behind `_stop_on_signal`."""
    import signal
    import threading

    flag = threading.Event()

    def ask(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        print(f"{signal.Signals(signum).name}: stopping after this step with a checkpoint", file=sys.stderr, flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, ask)
    return flag


def _bake(args) -> int:
    from engine.toyworld.bake import bake, export_only

    roles = None
    if args.students is not None:
        try:
            roles = tuple(int(n) for n in args.students.split(","))
        except ValueError:
            raise ValueError(f"--students takes step counts like 1,2, got {args.students!r}") from None
    lines = export_only(args.stage) if args.export_only else bake(args.stage, resume=args.resume, students=roles,
                                                                  stop=_stop_on_signal())
    for line in lines:
        print(line, flush=True)
    return 0


def _distill(args) -> int:
    from dataclasses import replace

    from engine import data, loading, paths, settings
    from engine.distill.config import DistillConfig
    from engine.distill.run import run_distillation
    from engine.folder import read_info

    cfg = DistillConfig.from_file(args.config) if args.config else DistillConfig()
    overrides = settings.from_flags(args, DistillConfig)
    if "timesteps" in overrides and "student_steps" not in overrides:
        overrides["student_steps"] = len(overrides["timesteps"])
    cfg = replace(cfg, **overrides)
    # the data before the model loads: a bad prompts file or folder is refused in a moment
    source = data.for_model(read_info(loading.resolve(args.model)[0]), args.prompts, args.videos)
    out = args.out or str(paths.home() / "models" / f"{args.model}-{cfg.method.replace('+', '-')}-{cfg.student_steps}step")
    for line in run_distillation(cfg, args.model, out, source, resume=args.resume, lora_rank=args.lora_rank):
        print(line, flush=True)
    return 0


def _switches(values: list[str]) -> tuple[tuple[float, str], ...]:
    out = []
    for value in values:
        at, sep, prompt = value.partition(":")
        try:
            seconds = float(at)
        except ValueError:
            seconds = None
        if not sep or seconds is None:
            raise ValueError(f"--switch takes SECONDS:PROMPT, e.g. 4:a blue square rising, got {value!r}")
        out.append((seconds, prompt.strip()))
    return tuple(out)


def _stream(args) -> int:
    from engine.events import Failed, Result
    from engine.generate import Engine
    from engine.session import Session
    from engine.requests import StreamRequest

    req = StreamRequest(prompt=args.prompt, seconds=args.seconds, switches=_switches(args.switch), seed=args.seed,
                        model=args.model).validate()  # before the model loads
    if args.out is not None and not args.out.endswith((".mp4", ".gif")):
        raise ValueError(f"--out must end in .mp4 or .gif, got {args.out!r}")
    session = Session("cli", engine=Engine(_runtime(args)))
    for event in session.stream(req, out=args.out, cancel=_signal_event()):
        if isinstance(event, Failed):
            print(f"error: {event.message}", file=sys.stderr)
            return ERROR_EXIT
        if isinstance(event, Result):
            saved = event.value
            numbers = saved.clip.meta["stream"]
            summary = {"path": str(saved.path), "generation_id": saved.generation_id} | numbers
            print(json.dumps(summary) if args.json else
                  f"wrote {saved.path}: {numbers['frames']} frames, first chunk {numbers['first_chunk_s']:.2f} s, "
                  f"{numbers['realtime_factor']}x real time")
    return 0


def _distill_stream(args) -> int:
    from dataclasses import replace

    from engine import data, loading, paths, settings
    from engine.folder import read_info
    from engine.stream.config import CausalConfig
    from engine.stream.run import run_causal_distillation

    cfg = CausalConfig.from_file(args.config) if args.config else CausalConfig()
    cfg = replace(cfg, **settings.from_flags(args, CausalConfig))
    source = data.for_model(read_info(loading.resolve(args.model)[0]), args.prompts, None)
    out = args.out or str(paths.home() / "models" / f"{args.model}-causal")
    for line in run_causal_distillation(cfg, args.model, out, source, init_student=args.init_student,
                                        lora_rank=args.lora_rank, resume=args.resume, should_stop=_stop_on_signal()):
        print(line, flush=True)
    return 0


def _soup(args) -> int:
    import json

    from engine.distill.soup import soup_students

    weights = None if args.weights is None else [float(w) for w in args.weights.split(",")]
    report = soup_students(args.sources, args.steps, args.out, weights=weights, lora_rank=args.lora_rank,
                           base_steps=args.base_steps, base=args.base)
    print(json.dumps(report), flush=True)
    return 0


def _tune(args) -> int:
    from engine import data, settings
    from engine.events import Failed, Progress, Result
    from engine.tune.config import TuneConfig
    from engine.tune.run import run_tune

    given = settings.from_flags(args, TuneConfig)
    cfg = TuneConfig(**given, model=args.model, reward=args.reward, alpha=float(given.get("rank", TuneConfig().rank)),
                     prompts=data.read_prompts(args.prompts) if args.prompts else [])
    for event in run_tune(cfg, args.out, eval_prompts=args.eval_prompts):
        if isinstance(event, Progress) and not args.json:
            shown = " ".join(f"{k} {event.metrics[k]:.4g}" for k in ("reward", "lrm_reward", "reg") if k in event.metrics)
            print(f"[tune] {event.stage} {event.step}/{event.total} {shown} eta {event.eta_s / 60:.1f} min", flush=True)
        elif isinstance(event, Failed):
            print(f"error: {event.message}", file=sys.stderr)
            return ERROR_EXIT
        elif isinstance(event, Result):
            print(json.dumps(event.value) if args.json else
                  f"adapter {event.value['adapter']}: reward {event.value['reward_before']} -> "
                  f"{event.value['reward_after']} in {event.value['wall_s']} s")
    return 0


def _eval(args) -> int:
    from engine.generate import Engine
    from engine.toyworld import eval_reader, minibench

    source, options = None, _runtime(args)
    if args.model != "renderer":
        source = minibench.model_source(Engine(options), args.model, args.role, args.steps, args.guidance)
    report = minibench.evaluate(source, args.split, prompts=args.prompts, seeds=args.seeds,
                                readers={"independent": eval_reader.score})
    report |= {"model": args.model, "role": None if source is None else args.role, "steps": args.steps,
               "runtime": None if source is None else options.describe()}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"MiniBench {args.model} {report['split']}: total {report['total']:.2f}  "
              f"semantic {report['semantic']:.3f}  quality {report['quality']:.3f}  "
              f"diversity {report['diversity']}  independent reader: semantic "
              f"{report['readers']['independent']['semantic']:.3f}")
    return 0


def _serve(args) -> int:
    from engine.worker import EngineProcess

    engine = EngineProcess(_runtime_fields(args))  # before gradio's import: the two overlap
    engine.preload(args.model)
    from studio.app import launch

    launch(host=args.host, port=args.port, auth=args.auth, model=args.model, engine=engine)
    return 0


def parser() -> argparse.ArgumentParser:
    from engine import settings
    from engine.distill.config import DistillConfig
    from engine.reward.spec import names as reward_names
    from engine.stream.config import CausalConfig
    from engine.tune.config import TuneConfig

    top = argparse.ArgumentParser(prog="rushes", description="few-step video generation studio")
    sub = top.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    h = sub.add_parser("history", help="list logged generations", description="Example: rushes history --json")
    h.add_argument("--json", action="store_true", help="print rows as JSON")
    h.add_argument("--limit", type=int, default=50, help="newest N rows (default 50)")
    b = sub.add_parser("bake", help="rebuild the embedded toyworld model",
                       description="Example: rushes bake toyworld --stage vae --resume")
    b.add_argument("target", choices=["toyworld"], help="what to bake")
    b.add_argument("--stage", choices=["vae", "teacher", "students", "stream", "all"], default="all",
                   help="one stage or all in order")
    b.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    b.add_argument("--students", default=None,
                   help="with --stage students: only these roles, e.g. 1 or 1,2 (the fewer-step ones start "
                        "from the shipped 4-step network, which is then not retrained)")
    b.add_argument("--export-only", action="store_true",
                   help="write the newest teacher checkpoint into assets/toyworld and stop")
    d = sub.add_parser("distill", help="distil a few-step student with DOLLAR (VSD + CD + LRM)",
                       description="Example: rushes distill --method vsd+cd+lrm --student-steps 4 --steps 500 "
                                   "--out ~/models/toyworld-4step. Multi-process: accelerate launch "
                                   "--num_processes N -m engine.cli distill ...")
    d.add_argument("--config", default=None, help="JSON file of DistillConfig fields (unknown keys are refused)")
    d.add_argument("--model", default="toyworld", help="teacher pipeline (name or folder)")
    d.add_argument("--prompts", default=None,
                   help="your prompts: one a line (.txt), or .jsonl / .csv with a 'prompt' field "
                        "(default: the model's own world, e.g. toyworld's renderer)")
    d.add_argument("--videos", default=None,
                   help="with --prompts: a folder of real clips, each beside a .txt caption of the same name, for "
                        "the terms that need real data (consistency distillation, the GAN, generator input real)")
    settings.add_flags(d, DistillConfig)  # the rest from the distillation's settings table (engine/distill/config.py)
    d.add_argument("--lora-rank", type=int, default=None,
                   help="save the student as a LoRA of this rank on the --init-student network (a few MB)")
    d.add_argument("--out", default=None, help="pipeline folder to write (the teacher plus this student)")
    d.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    st = sub.add_parser("stream", help="play an endless clip chunk by chunk with the model's causal student",
                        description="Example: rushes stream --prompt 'a red circle moving right on a black background' "
                                    "--switch '4:a blue square rising on a navy background' --seconds 8 --out s.mp4 "
                                    "--json")
    st.add_argument("--prompt", required=True, help="what the stream shows from the start")
    st.add_argument("--switch", action="append", default=[], metavar="SECONDS:PROMPT",
                    help="from this second on, this prompt (repeatable)")
    st.add_argument("--seconds", type=float, default=10.0, help="length of video to make (default 10)")
    st.add_argument("--seed", type=int, default=0, help="seed of the stream's noise (default 0)")
    st.add_argument("--model", default="toyworld", help="model name or folder with a causal student")
    st.add_argument("--out", default=None, help="file to write (.mp4 or .gif; default: the outputs folder)")
    st.add_argument("--json", action="store_true",
                    help="print path, frames, fps, first_chunk_s, chunk_s (median), realtime_factor")
    _add_runtime(st)
    ds = sub.add_parser("distill-stream", help="distil a causal student that streams (CausVid init + Self-Forcing DMD)",
                        description="Example: rushes distill-stream --model toyworld --init-student 4 --lora-rank 16 "
                                    "--out ~/models/toyworld-causal")
    ds.add_argument("--config", default=None, help="JSON file of CausalConfig fields (unknown keys are refused)")
    ds.add_argument("--model", default="toyworld", help="teacher pipeline (name or folder)")
    ds.add_argument("--prompts", default=None, help="your prompts: one a line (.txt), or .jsonl / .csv with a "
                    "'prompt' field (default: the model's own world)")
    ds.add_argument("--init-student", type=int, default=None,
                    help="start from the model's n-step student's network (default: the teacher's)")
    ds.add_argument("--lora-rank", type=int, default=None,
                    help="save the causal student as a LoRA of this rank on the --init-student network")
    settings.add_flags(ds, CausalConfig)  # the rest from the causal distillation's settings table
    ds.add_argument("--out", default=None, help="pipeline folder to write (the teacher plus the causal student)")
    ds.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    so = sub.add_parser("soup", help="average students distilled from one network into one student (a model soup)",
                        description="Example: rushes soup --steps 1 --lora-rank 16 --out ~/models/toyworld-soup "
                                    "~/models/s1-gan ~/models/s1-soft ~/models/s1-cls")
    so.add_argument("sources", nargs="+", help="pipelines (names or folders) whose --steps students are averaged")
    so.add_argument("--steps", type=int, required=True, help="which student of each source (e.g. 1)")
    so.add_argument("--out", required=True, help="pipeline folder to write (a copy of --base plus the soup)")
    so.add_argument("--weights", default=None, help="comma-separated weight per source (default: equal)")
    so.add_argument("--lora-rank", type=int, default=None,
                    help="save the soup as a LoRA of this rank on the --base-steps network (default: whole network)")
    so.add_argument("--base-steps", type=int, default=4,
                    help="the student network the sources started from, which a LoRA goes on (default 4)")
    so.add_argument("--base", default=None, help="pipeline folder the soup joins (default: the first source's)")
    t = sub.add_parser("tune", help="short latent-reward LoRA fine-tune of a student toward a reward",
                       description="Example: rushes tune --reward colourfulness --steps 300 --out ~/adapters/vivid --json")
    t.add_argument("--model", default="toyworld", help="pipeline whose student is tuned")
    t.add_argument("--reward", required=True, help="built-in name, 'palette' (needs --reference) or 'custom' "
                                                    "(needs --reward-file): " + ", ".join(reward_names()))
    t.add_argument("--prompts", default=None, help="your prompts: one a line (.txt), or .jsonl / .csv with a "
                   "'prompt' field (default: the model's own world, e.g. toyworld's captions)")
    settings.add_flags(t, TuneConfig)  # the rest from the tune's settings table (engine/tune/config.py)
    t.add_argument("--eval-prompts", type=int, default=4, help="held-out prompts for reward before/after (0 skips)")
    t.add_argument("--out", required=True, help="adapter folder to write (diffusers LoRA format)")
    t.add_argument("--json", action="store_true", help="print adapter path, reward before/after, wall time")
    e = sub.add_parser("eval", help="MiniBench: score a model (or the renderer) on a toyworld split",
                       description="Example: rushes eval --role student --steps 4 --split public-heldout --json")
    e.add_argument("--model", default="toyworld", help="model name or folder; 'renderer' scores the renderer")
    e.add_argument("--role", default="student", choices=["student", "teacher"], help="which role samples")
    e.add_argument("--steps", type=int, default=None, help="sampling steps (default: the role's)")
    e.add_argument("--guidance", type=float, default=None, help="teacher CFG scale (default: the model's)")
    e.add_argument("--split", default="public-eval", choices=["public-eval", "public-heldout", "train"],
                   help="which captions to use")
    e.add_argument("--prompts", type=int, default=32, help="captions to evaluate (default 32)")
    e.add_argument("--seeds", type=int, default=2, help="seeds per caption, for diversity (default 2)")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_runtime(e)
    s = sub.add_parser("serve", help="launch the studio in the browser",
                       description="Example: rushes serve --port 7860")
    s.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 needs --auth)")
    s.add_argument("--port", type=int, default=None,
                   help="port (default: $GRADIO_SERVER_PORT or 7860, or the next free one when that is taken)")
    s.add_argument("--auth", default=None, help="user:pass required when exposed")
    s.add_argument("--model", default="toyworld", help="model name, registry entry or pipeline folder")
    _add_runtime(s)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handlers = {"generate": _generate, "history": _history, "bake": _bake, "eval": _eval, "distill": _distill,
                "soup": _soup, "tune": _tune, "stream": _stream, "distill-stream": _distill_stream,
                "serve": _serve}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
