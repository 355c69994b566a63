"""Model-family plug-ins: what a family of models brings that the generic engine must not know.

A plug-in is a module with a `register()` function, named in the `rushes.plugins` entry-point
group of its package (pyproject.toml; the embedded toyworld registers `engine.toyworld.plugin`
this way). `register()` adds to the generic registries:
- `engine.reward.builtin.REWARDS`: pixel rewards `(frames, prompt) -> float` by name;
- `engine.reward.pixel.PIXEL_REWARDS`: differentiable rewards `(pixels, captions) -> [B]`;
- `engine.data.SOURCES`: a data source (prompt splits and real clips) by world name, which a
  model folder names in its rushes.json (`world`).

Nothing under engine/ but a plug-in's own package and the command-line entry point imports a
plug-in (tests/test_layout.py walks every import to hold this); the registries call `load()`
before they answer, so a plug-in is found wherever the engine runs, spawned tune processes too.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

GROUP = "rushes.plugins"
_loaded: list[str] | None = None


def load() -> list[str]:
    """Import and register every installed plug-in once; the names of those registered."""
    global _loaded
    if _loaded is None:
        _loaded = []  # set first: a plug-in's register() may itself ask a registry
        for point in sorted(entry_points(group=GROUP), key=lambda p: p.name):
            module = importlib.import_module(point.value)
            module.register()
            _loaded.append(point.name)
    return list(_loaded)
