"""Many generations through the studio in Debian's chromium: does any status stick?

    python bench/stress.py [--clips 200]

Runs the journey's stress case (tests/test_journey.py, `test_a_run_of_generations_never_leaves_a_status_stuck`)
with RUSHES_STRESS_CLIPS set, on the tiny test model; prints the number of clips, the median time
from click to summary and every status that did not reach its clip's summary within 60 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=200)
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "pytest", "tests/test_journey.py", "-k", "stuck", "-s", "-q",
                          "-p", "no:cacheprovider"], cwd=root, env=os.environ | {"RUSHES_STRESS_CLIPS": str(args.clips)},
                         capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if "generations, median" in line]
    print(lines[-1] if lines else out.stdout[-3000:] + out.stderr[-2000:])
    raise SystemExit(out.returncode)


if __name__ == "__main__":
    main()
