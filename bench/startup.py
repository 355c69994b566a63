"""Where the studio's cold start goes, stage by stage, in one fresh process.

    python bench/startup.py [--runs 2]

Each run is a new Python process that imports torch, then gradio, then the studio's modules,
builds the page (`studio.app.build`, no server), all of which comes before `python app.py`
serves its page; then what the studio's preload does while the browser opens the page: imports
diffusers' Wan transformer and AutoencoderKL (the studio's modules must not have), then makes a
first 4-step clip on the embedded model through the studio's engine (which loads the model),
saved as the studio saves it. Prints each stage's seconds per run. `bench/studio.py` times the same
start end to end in a browser; this says which stage it is.

That is the start as one process makes it (an in-process engine on a thread of its own, as the
studio had before `engine/worker.py`). `--worker` times the studio's start as it is now: the
engine's worker process is started and told to preload before anything heavy is imported here,
then this process imports torch, gradio and the studio and builds the page while the worker
imports diffusers and loads the model on the other core; then it waits for the preload and
makes the first clip through the worker.

    python bench/startup.py --worker [--runs 2]

`--imports` says instead where the preload's imports go: one process under `python -X importtime`
imports torch and gradio, then what the preload imports (diffusers' Wan transformer and
AutoencoderKL, transformers); the seconds of the modules imported after gradio, summed by top-level
package (each module's own time, so nothing counts twice).

    python bench/startup.py --imports
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import harness  # bench/harness.py: measure in a fresh process

STAGES = ("import torch", "import gradio", "import studio", "build the page",
          "import diffusers (Wan, AutoencoderKL)", "first clip (model load + 4 steps)")
WORKER_STAGES = ("start the engine process, ask it to preload", "import torch", "import gradio", "import studio",
                 "build the page", "wait for the preload (the worker's imports and load)", "first clip (4 steps)")


def one_start() -> list[float]:
    marks = [time.perf_counter()]
    import torch  # noqa: F401

    marks.append(time.perf_counter())
    import gradio  # noqa: F401

    marks.append(time.perf_counter())
    from engine.events import Result
    from engine.generate import Engine
    from engine.requests import GenerateRequest
    from engine.runtime import RuntimeOptions
    from engine.session import Session
    from studio.app import build

    marks.append(time.perf_counter())
    session = Session("studio", engine=Engine(RuntimeOptions()))
    build(session, "toyworld")
    marks.append(time.perf_counter())
    assert "diffusers" not in sys.modules, "the studio imported diffusers before serving its page"
    from diffusers import AutoencoderKL, WanTransformer3DModel  # noqa: F401

    marks.append(time.perf_counter())
    request = GenerateRequest(prompt="a red circle moving left", model="toyworld", role="student", steps=4, seed=0)
    assert any(isinstance(e, Result) for e in session.generate(request)), "no clip came back"
    marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])]


def worker_start() -> list[float]:
    marks = [time.perf_counter()]
    from engine.worker import EngineProcess

    engine = EngineProcess()
    preload = engine.preload("toyworld")
    marks.append(time.perf_counter())
    import torch  # noqa: F401

    marks.append(time.perf_counter())
    import gradio  # noqa: F401

    marks.append(time.perf_counter())
    from engine.events import Result
    from engine.requests import GenerateRequest
    from engine.session import Session
    from studio.app import build

    marks.append(time.perf_counter())
    session = Session("studio", engine=engine)
    build(session, "toyworld")
    marks.append(time.perf_counter())
    preload.result()
    marks.append(time.perf_counter())
    request = GenerateRequest(prompt="a red circle moving left", model="toyworld", role="student", steps=4, seed=0)
    assert any(isinstance(e, Result) for e in session.generate(request)), "no clip came back"
    marks.append(time.perf_counter())
    engine.close()
    return [b - a for a, b in zip(marks, marks[1:])]


PRELOAD_IMPORTS = ("import torch, gradio; from diffusers import AutoencoderKL, WanTransformer3DModel; "
                   "import transformers")


def import_shares() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", PRELOAD_IMPORTS], capture_output=True,
                         text=True, check=True)
    rows = []  # (own microseconds, module, top level?) in the order the imports finished
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            own, _, name = line.removeprefix("import time:").split("|")
            rows.append((int(own), name.strip(), not name.startswith("  ")))
    after = next(i for i, (_, name, top) in enumerate(rows) if top and name == "gradio") + 1
    shares: dict[str, int] = {}
    for own, name, _ in rows[after:]:
        shares[name.split(".")[0]] = shares.get(name.split(".")[0], 0) + own
    print(f"`{PRELOAD_IMPORTS}`: what comes after gradio, {sum(shares.values()) / 1e6:.2f} s in all\n")
    print("| package | s |\n|---|---|")
    for package, own in sorted(shares.items(), key=lambda kv: -kv[1])[:10]:
        print(f"| {package} | {own / 1e6:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--imports", action="store_true", help="where the preload's imports go, by package")
    ap.add_argument("--worker", action="store_true", help="the studio's start: the engine in a worker process")
    harness.add_child_argument(ap)
    args = ap.parse_args()
    if args.imports:
        import_shares()
        return
    case = harness.child_case(args)
    if case is not None:
        harness.report({"stages": worker_start() if case["worker"] else one_start()})
        return
    rows = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as home:
            rows.append(harness.in_child(__file__, {"worker": args.worker}, env={"RUSHES_HOME": home})["stages"])
    print("| stage | " + " | ".join(f"run {i + 1} s" for i in range(len(rows))) + " |")
    print("|---|" + "---|" * len(rows))
    for i, stage in enumerate(WORKER_STAGES if args.worker else STAGES):
        print(f"| {stage} | " + " | ".join(f"{r[i]:.2f}" for r in rows) + " |")
    print("| total | " + " | ".join(f"{sum(r):.2f}" for r in rows) + " |")


if __name__ == "__main__":
    main()
