"""Speed of the student (1/2/4 steps) against the teacher (50 steps, CFG), side by side.

    python bench/speed.py                      # the embedded toyworld model
    python bench/speed.py --random             # toyworld-sized random weights (same speed)
    python bench/speed.py --model /path/to/pipeline --repeats 3

Every configuration runs in one process, interleaved round-robin, `--repeats` times after a
warm-up; medians are reported with ratios against the teacher. Prints a markdown table for
docs/RESULTS.md. Absolute times hold only for the machine they were taken on.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


from engine.events import Result
from engine.generate import Engine
from engine.runtime import RuntimeOptions
from engine.requests import GenerateRequest


def random_toyworld(folder: Path) -> Path:
    """Toyworld's architecture with random weights: teacher, three students, VAE."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from engine.folder import write_pipeline
    from engine.schedule import default_student_timesteps
    from engine.toyworld.teacher_bake import TOYWORLD_INFO, make_teacher
    from engine.toyworld.vae_bake import make_vae

    torch.manual_seed(0)
    teacher = make_teacher()
    students = {n: (teacher, default_student_timesteps(n)) for n in (1, 2, 4)}
    return write_pipeline(folder / "toyworld-random", teacher, make_vae(), FlowMatchEulerDiscreteScheduler(shift=3.0),
                          TOYWORLD_INFO, students)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--random", action="store_true", help="random weights in toyworld's architecture")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--teacher-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode-bf16", action="store_true", help="decode in bf16 (faster on CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = str(random_toyworld(Path(tempfile.mkdtemp()))) if args.random else args.model
    engine = Engine(RuntimeOptions(decode_dtype="bfloat16" if args.decode_bf16 else None))
    configs = [("student", 1), ("student", 2), ("student", 4), ("teacher", args.teacher_steps)]
    prompt = "a red ball moving right on a black background"
    times: dict[tuple, list[dict]] = {c: [] for c in configs}
    for rep in range(args.repeats + 1):  # the first round warms up and is dropped
        for role, steps in configs:
            req = GenerateRequest(prompt=prompt, model=model, role=role, steps=steps, seed=rep)
            engine.model(model).text.clear_cache()  # end-to-end includes encoding the prompt
            result = [e for e in engine.generate(req) if isinstance(e, Result)][0].value
            if rep:
                times[(role, steps)].append(result.meta["timings"] | {"nfe": result.meta["nfe"]})
    med = {c: {k: statistics.median(t[k] for t in ts) for k in ts[0]} for c, ts in times.items()}
    teacher = med[("teacher", args.teacher_steps)]
    loaded = engine.model(model)
    print(f"model: {loaded.info.name} ({'random weights' if args.random else loaded.folder}); "
          f"{loaded.info.frames}x{loaded.info.height}x{loaded.info.width}; torch threads {args.threads}; "
          f"decode {'bf16' if args.decode_bf16 else 'fp32'}; median of {args.repeats}")
    print()
    print("| sampler | NFE | text s | denoise s | decode s | end-to-end s | denoise % of teacher | "
          "end-to-end % of teacher | denoise speed-up | end-to-end speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (role, steps), m in med.items():
        print(f"| {role} {steps} step{'s' if steps > 1 else ''}{' CFG' if role == 'teacher' else ''} | "
              f"{m['nfe']:.0f} | {m['text_encode_s']:.4f} | {m['denoise_s']:.4f} | {m['decode_s']:.4f} | "
              f"{m['total_s']:.4f} | {100 * m['denoise_s'] / teacher['denoise_s']:.2f}% | "
              f"{100 * m['total_s'] / teacher['total_s']:.2f}% | {teacher['denoise_s'] / m['denoise_s']:.1f}x | "
              f"{teacher['total_s'] / m['total_s']:.1f}x |")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(bench wall time {time.perf_counter() - t0:.0f} s)")
