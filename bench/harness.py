"""The benches' one way to measure in a fresh process: a bench re-runs its own file with
`--child JSON` (the case's arguments) and reads back the JSON its child prints last.

Why a fresh process: what a measurement depends on lives as long as a process does (OpenMP
teams, imported modules, the allocator's peak), so cases measured in one process would leak into
each other. Benches import this as `import harness` (a script's own folder is on its path) and
the engine as an installed package (`pip install -e .`): no path patching.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def add_child_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)


def in_child(script: str, case: dict, env: dict | None = None) -> dict:
    """Run `script` in a new interpreter on `case` (its `--child` argument, a JSON object) and
    return the JSON object its last line of output is; the child's stderr is shown on failure."""
    out = subprocess.run([sys.executable, script, "--child", json.dumps(case)], capture_output=True, text=True,
                         env=None if env is None else os.environ | env)
    if out.returncode:
        raise SystemExit(f"{script} {case} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_case(args: argparse.Namespace) -> dict | None:
    """The case this process was started for (None in the parent)."""
    return None if args.child is None else json.loads(args.child)


def report(value: dict) -> None:
    """The child's answer: one JSON line, printed last."""
    print(json.dumps(value), flush=True)
