"""STYLE.md rules 1 and 4: the UI imports no torch, the engine no gradio, imports do no work."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(folder: str) -> set[str]:
    names = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_studio_imports_no_torch_and_engine_no_gradio():
    assert not {"torch", "diffusers", "peft"} & _imports("studio")
    assert "gradio" not in _imports("engine")


def test_importing_the_engine_loads_no_weights_and_starts_no_threads():
    code = ("import threading, engine.cli, engine.generate, engine.session, engine.loading; "
            "import sys; print(threading.active_count(), 'gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["1", "False"]
