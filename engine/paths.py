"""Where rushes keeps its data: `$RUSHES_HOME` (default `~/.rushes`) and the shipped assets."""

from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TOYWORLD = ASSETS / "toyworld"
BAKE_STATE = ASSETS.parent / "bake-state"  # a long bake's resumable state while it runs, committed to git between
# working periods and removed when the bake ships (docs/experiments/teacher-v2.md)


def home() -> Path:
    """The data folder: the database, outputs, adapters, runs and bake checkpoints live here."""
    root = Path(os.environ.get("RUSHES_HOME") or Path.home() / ".rushes").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def outputs() -> Path:
    path = home() / "outputs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def database() -> Path:
    return home() / "studio.db"


def runs() -> Path:
    path = home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def adapters() -> Path:
    path = home() / "adapters"
    path.mkdir(parents=True, exist_ok=True)
    return path
