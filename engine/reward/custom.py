"""A user's own reward file, run in a subprocess with a timeout and its answers validated.

The file defines `reward(frames, prompt) -> float` (frames uint8 [T, H, W, 3]). Each batch
runs in a fresh process in its own process group: a hang is killed with the whole group at
the timeout, a crash or a non-finite / non-number answer is an error naming the problem, and
the caller takes no optimizer step on a bad reward.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WORKER = """
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("user_reward", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
frames = np.load(sys.argv[2])
prompts = json.loads(open(sys.argv[3]).read())
out = []
for f, p in zip(frames, prompts):
    value = module.reward(f, p)
    out.append(value if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value))
print(json.dumps(out))
"""


class RewardError(ValueError):
    pass


class CustomReward:
    def __init__(self, path: str | Path, timeout_s: float = 30.0):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file() or self.path.suffix != ".py":
            raise ValueError(f"custom reward must be an existing .py file, got {path}")
        if "def reward" not in self.path.read_text(errors="replace"):
            raise ValueError(f"{self.path.name} defines no `reward(frames, prompt)` function")
        self.timeout_s = timeout_s

    def batch(self, frames: list[np.ndarray], prompts: list[str]) -> list[float]:
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "frames.npy", np.stack(frames))
            (Path(tmp) / "prompts.json").write_text(json.dumps(prompts))
            proc = subprocess.Popen([sys.executable, "-c", WORKER, str(self.path), str(Path(tmp) / "frames.npy"),
                                     str(Path(tmp) / "prompts.json")], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp)
            try:
                out, err = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the reward and anything it forked
                proc.communicate()
                raise RewardError(f"custom reward {self.path.name} timed out after {self.timeout_s:g} s") from None
        if proc.returncode != 0:
            last = (err.strip().splitlines() or ["no message"])[-1]
            raise RewardError(f"custom reward {self.path.name} failed: {last}")
        try:
            values = json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise RewardError(f"custom reward {self.path.name} printed no answer") from None
        for v in values:
            if not isinstance(v, (int, float)):
                raise RewardError(f"custom reward {self.path.name} returned {v} instead of a number")
            if not math.isfinite(v):
                raise RewardError(f"custom reward {self.path.name} returned a non-finite value {v}")
        if len(values) != len(frames):
            raise RewardError(f"custom reward {self.path.name} returned {len(values)} values for {len(frames)} clips")
        return [float(v) for v in values]
